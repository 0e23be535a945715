import type { AppContext } from './context.js';
import { getSnapshotSandbox, insertSandbox, setSandboxState } from '../catalog/sandboxes.js';
import { assertReady, getAccountSnapshot } from '../catalog/snapshots.js';
import { submitOperation } from './operations.js';
import { newSandboxId } from '../shared/ids.js';

/**
 * A new sandbox from a snapshot: same template and resources as the snapshot's source sandbox,
 * the snapshot's files, and no session history. The fork runs on the new sandbox's workflow.
 */
export async function forkSandbox(ctx: AppContext, accountId: string, snapshotId: string, idleTimeoutSeconds?: number) {
  const snap = assertReady(await getAccountSnapshot(ctx.db, accountId, snapshotId));
  const source = await getSnapshotSandbox(ctx.db, snap);
  const sandbox = await insertSandbox(ctx.db, {
    id: newSandboxId(),
    accountId,
    template: source.template,
    cpu: source.cpu,
    memoryMb: source.memory_mb,
    hostId: ctx.config.hostId,
    idleTimeoutSeconds: idleTimeoutSeconds ?? source.idle_timeout_s,
    sourceSnapshotId: snapshotId,
  }, ctx.config.limits.maxSandboxesPerAccount);
  let operation;
  try {
    operation = await submitOperation(ctx, sandbox, 'fork', { snapshotId, sourceSandboxId: source.id, newSandboxId: sandbox.id }, { snapshotId });
  } catch (err) {
    // The fork never started: its row must not stay "creating".
    await setSandboxState(ctx.db, sandbox.id, 'deleted').catch(() => {});
    throw err;
  }
  return { sandbox, snapshot: snap, operation };
}
