import { WorkflowNotFoundError } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import type { AppContext } from '../context.js';
import type { OperationRow } from '../../catalog/schema.js';
import { CagedError } from '../../shared/errors.js';
import { historyTimeline, type Timeline } from './history-timeline.js';

export interface OperationTimeline extends Timeline {
  operation_id: string;
  /** The step the catalog row shows now (local catalog steps do not record their names in history). */
  step: string;
}

/**
 * The operation's timeline from its workflow's history (operation id = workflow id), completed for
 * activities still running from the workflow's description. An operation still queued behind
 * others on its sandbox has no workflow yet: its timeline is empty, with status "queued".
 */
export async function operationTimeline(ctx: AppContext, op: OperationRow): Promise<OperationTimeline> {
  const handle = ctx.temporal.workflow.getHandle(op.id);
  try {
    const history = await handle.fetchHistory();
    const desc = await handle.describe();
    const pending = desc.status.name === 'RUNNING' ? (desc.raw.pendingActivities ?? []) : [];
    return { operation_id: op.id, step: op.step, ...historyTimeline(history.events ?? [], pending) };
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
    return { operation_id: op.id, step: op.step, status: op.status === 'running' ? 'queued' : 'not_found', entries: [] };
  }
}

/** The workflow's history as `temporal workflow show --output json` prints it, for replay. */
export async function operationHistoryJson(ctx: AppContext, op: OperationRow): Promise<string> {
  try {
    return historyToJSON(await ctx.temporal.workflow.getHandle(op.id).fetchHistory());
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw new CagedError('not_found', `operation ${op.id} has no workflow history (yet)`);
    throw err;
  }
}
