import type { AppContext } from './context.js';
import type { OperationRow } from '../catalog/schema.js';
import { getSandbox } from '../catalog/sandboxes.js';
import { reserveSnapshot } from '../catalog/snapshots.js';
import { submitOperation } from './operations.js';
import { newSnapshotId } from '../shared/ids.js';
import { CagedError } from '../shared/errors.js';
import type { OperationRequest } from '../shared/definitions.js';

/** A new run of a finished operation with the same inputs (a snapshot gets a fresh id). */
export async function retryOperation(ctx: AppContext, op: OperationRow): Promise<OperationRow> {
  if (op.status === 'running') throw new CagedError('invalid_state', `operation ${op.id} is still running`);
  if (op.status === 'succeeded') throw new CagedError('invalid_state', `operation ${op.id} succeeded; there is nothing to retry`);
  if (!op.sandbox_id) throw new CagedError('invalid_state', `operation ${op.id} cannot be retried`);
  const sandbox = await getSandbox(ctx.db, op.sandbox_id);
  if (!sandbox || (sandbox.state === 'deleted' && op.type !== 'delete_snapshot')) throw new CagedError('not_found', `sandbox ${op.sandbox_id} not found`);
  const { operationId: _o, accountId: _a, hostQueue: _h, ...input } = op.input as OperationRequest['input'];
  const type = op.type as OperationRequest['type'];
  if (type === 'create_snapshot') {
    const i = input as { sandboxId: string; name: string; kind: 'manual' | 'auto' };
    const snapshotId = newSnapshotId();
    await reserveSnapshot(
      ctx.db,
      { id: snapshotId, accountId: sandbox.account_id, sandboxId: sandbox.id, name: i.name, kind: i.kind },
      ctx.config.limits,
    );
    return submitOperation(ctx, sandbox, type, { ...i, snapshotId }, { snapshotId });
  }
  if (type === 'import' || op.type === 'fork') throw new CagedError('invalid_state', `a ${type} is retried by sending its request again`);
  return submitOperation(ctx, sandbox, type, input as never, { snapshotId: op.snapshot_id });
}
