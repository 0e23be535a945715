import { WorkflowNotFoundError } from '@temporalio/client';
import type { OperationRow } from '../../catalog/schema.js';
import { getOperation } from '../../catalog/operations.js';
import { markSnapshotFailed } from '../../catalog/snapshots.js';
import { reconcileOperation } from '../reconcile.js';
import { sandboxWorkflowId } from '../../shared/definitions.js';
import { accountsOf, pastGrace, type Check, type CheckRun, type Found } from './findings.js';
import { unattendedSnapshots } from './snapshot-rows.js';

async function runningOperations(run: CheckRun): Promise<OperationRow[]> {
  const accounts = accountsOf(run);
  return run.ctx.db
    .selectFrom('operations')
    .selectAll()
    .where('status', '=', 'running')
    .$if(accounts !== undefined, (q) => q.where('account_id', 'in', accounts!))
    .orderBy('seq')
    .execute();
}

/**
 * A pending snapshot is being written by a running operation: one that names it (create_snapshot,
 * import) or one on its sandbox (a pause reserves its auto snapshot inside the workflow, so its
 * row does not name it). Without one, nothing will ever finish it; the repair marks it failed, and
 * its object, if any, becomes an orphan that a later run past the grace period removes.
 */
export const checkPendingSnapshots: Check = async (run) => {
  const { db } = run.ctx;
  const found: Found[] = [];
  for (const snap of await unattendedSnapshots(run, 'pending')) {
    found.push({
      check: 'pending_snapshot_without_operation',
      subject: snap.id,
      detail: `snapshot ${snap.id} of sandbox ${snap.sandbox_id} is pending, and no operation runs that could finish it`,
      repair: async () => {
        await markSnapshotFailed(db, snap.id, 'internal', 'the snapshot was left pending without an operation; marked failed by verify');
        return (await db.selectFrom('snapshots').select('state').where('id', '=', snap.id).executeTakeFirst())?.state === 'failed';
      },
    });
  }
  return found;
};

type WorkflowState = { open: true } | { open: false; status: string };

/** The operation's workflow (op id = workflow id), or, before it starts, the sandbox workflow that queues it. */
async function workflowState(run: CheckRun, op: OperationRow): Promise<WorkflowState> {
  const handle = (id: string) => run.ctx.temporal.workflow.getHandle(id);
  try {
    const desc = await handle(op.id).describe();
    return desc.status.name === 'RUNNING' ? { open: true } : { open: false, status: desc.status.name };
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
  if (!op.sandbox_id) return { open: false, status: 'NOT_FOUND' };
  try {
    const entity = await handle(sandboxWorkflowId(op.sandbox_id)).describe();
    if (entity.status.name === 'RUNNING') return { open: true };
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
  return { open: false, status: 'NOT_FOUND' };
}

/**
 * A running operation has an open workflow, or waits in its sandbox workflow's queue. When the
 * workflow ended without recording the outcome (terminated, timed out), the repair is the API's own
 * reconciliation. A workflow that completed while its row still says running is ambiguous (its
 * result is not in the catalog) and is only reported.
 */
export const checkRunningOperations: Check = async (run) => {
  const found: Found[] = [];
  for (const op of await runningOperations(run)) {
    if (!pastGrace(run, op.updated_at)) continue;
    const state = await workflowState(run, op);
    if (state.open) continue;
    const reconcilable = state.status !== 'COMPLETED';
    found.push({
      check: 'operation_without_workflow',
      subject: op.id,
      detail:
        state.status === 'NOT_FOUND'
          ? `operation ${op.id} is running, but neither its workflow nor its sandbox's workflow exists`
          : `operation ${op.id} is running, but its workflow is closed (${state.status.toLowerCase()})${reconcilable ? '' : '; its outcome is unknown'}`,
      ...(reconcilable
        ? {
            repair: async () => {
              await reconcileOperation(run.ctx, op);
              return (await getOperation(run.ctx.db, op.id))?.status !== 'running';
            },
          }
        : {}),
    });
  }
  return found;
};
