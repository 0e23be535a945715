import { CancellationScope } from '@temporalio/workflow';
import type { RestoreInput } from '../shared/definitions.js';
import { catalog, hostActivities, reportStep } from './activities.js';
import { runOperation, throwIfCancelled } from './operation.js';
import { afterCommit, finishSwap, stageInto, swapInto } from './restore-steps.js';
import type { Saga } from './saga.js';

/**
 * Replaces the target's filesystem with the snapshot's, exactly. Its processes are stopped
 * meanwhile, and it ends in the state it had before (running or paused).
 */
export async function restoreWorkflow(input: RestoreInput) {
  return runOperation(input.operationId, (saga) => restoreStagedFirst(input, saga), input.deadlineSeconds);
}

/**
 * The snapshot is staged beside the root while the target keeps running; its processes stop only
 * for the swap, which takes host steps alone (no catalog step), so an unreachable catalog never
 * keeps them stopped.
 */
async function restoreStagedFirst(input: RestoreInput, saga: Saga) {
  const { control } = hostActivities(input.hostQueue);
  const before = await catalog.getSandboxState(input.targetSandboxId);
  const { snap, disarmRollback } = await stageInto({ ...input }, saga);
  await reportStep(input.operationId, 'swapping');
  // One undo for both, in this order: the previous root goes back before the processes continue.
  disarmRollback();
  saga.add('roll back root and resume target', async () => {
    await control.rollbackRoot(input.targetSandboxId, input.operationId);
    if (before !== 'paused') await control.resumeSandbox(input.targetSandboxId);
  });
  // Steps on the disk and processes are not cancelled half-way: a cancelled activity would go on
  // running on the host while the compensations already undo it.
  await CancellationScope.nonCancellable(() => control.pauseSandbox(input.targetSandboxId));
  await swapInto({ ...input });
  // A cancel that arrived during the swap is honoured here, before the commit point: the saga puts
  // the previous root back. Past this point the restore finishes.
  throwIfCancelled();
  const warnings = await CancellationScope.nonCancellable(async () => {
    await finishSwap(control, saga, input.targetSandboxId, input.operationId);
    // Commit point: the new root is in place and nothing may put the old one back. What follows
    // cannot make the restore fail; a sandbox left stopped is reported, and verify --repair resumes it.
    saga.commit();
    return afterCommit([
      before !== 'paused' ? ['resume the sandbox', () => control.resumeSandbox(input.targetSandboxId)] : undefined,
      ['record activity', () => catalog.touchSandbox(input.targetSandboxId)],
    ]);
  });
  return { snapshot_id: input.snapshotId, sandbox_id: input.targetSandboxId, sha256: snap.sha256, size_bytes: snap.sizeBytes, ...(warnings.length ? { warnings } : {}) };
}
