import { WorkflowNotFoundError } from '@temporalio/client';
import type { AppContext } from './context.js';
import type { OperationRow } from '../catalog/schema.js';
import { finishOperation, getOperation } from '../catalog/operations.js';
import { sandboxWorkflowId } from '../shared/definitions.js';

const CLOSED_FAILED: Record<string, 'failed' | 'cancelled'> = {
  FAILED: 'failed',
  TERMINATED: 'failed',
  TIMED_OUT: 'failed',
  CANCELLED: 'cancelled',
};

/**
 * The catalog row says what the workflow recorded. If an operator terminated the workflow, it
 * could not record anything: ask Temporal, so an operation never shows "running" forever.
 */
export async function reconcileOperation(ctx: AppContext, op: OperationRow): Promise<OperationRow> {
  if (op.status !== 'running' || Date.now() - op.updated_at.getTime() < 5000) return op;
  try {
    const desc = await ctx.temporal.workflow.getHandle(op.id).describe();
    const status = CLOSED_FAILED[desc.status.name];
    if (!status) return op;
    await finishOperation(ctx.db, op.id, {
      status,
      error: { code: status === 'cancelled' ? 'cancelled' : 'internal', message: `the workflow ended as ${desc.status.name.toLowerCase()} without recording a result` },
    });
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError) || !op.sandbox_id) return op;
    // Not started yet: it waits in its sandbox's queue, which must still be alive.
    try {
      const entity = await ctx.temporal.workflow.getHandle(sandboxWorkflowId(op.sandbox_id)).describe();
      if (entity.status.name === 'RUNNING') return op;
    } catch (e) {
      if (!(e instanceof WorkflowNotFoundError)) return op;
    }
    await finishOperation(ctx.db, op.id, { status: 'failed', error: { code: 'internal', message: 'the operation was lost before it started; retry it' } });
  }
  return (await getOperation(ctx.db, op.id)) ?? op;
}
