import { CancellationScope, deprecatePatch } from '@temporalio/workflow';
import { DISCARD_ROOT_AFTER_SUCCESS } from './patches.js';
import { catalog, hostActivities } from './activities.js';
import type { Saga } from './saga.js';
import { describeFailure } from './failure.js';


export interface RestoreArgs {
  operationId: string;
  snapshotId: string;
  targetSandboxId: string;
  hostQueue: string;
}

/**
 * Verify-and-stage, then swap. Before the swap a failure only removes the staging directory; after
 * it, the compensation puts the previous root back. The caller has stopped the target's processes.
 */
export async function restoreInto(a: RestoreArgs, saga: Saga): Promise<{ sha256: string; size_bytes: number }> {
  const { control, data } = hostActivities(a.hostQueue);
  const snap = await catalog.claimSnapshotForRead(a.snapshotId);
  await catalog.reportStep(a.operationId, 'extracting', snap.sizeBytes);
  saga.add('roll back root', () => control.rollbackRoot(a.targetSandboxId, a.operationId));
  await data.stageSnapshot({
    operationId: a.operationId,
    sandboxId: a.targetSandboxId,
    snapshotId: a.snapshotId,
    objectKey: snap.objectKey,
    sha256: snap.sha256,
    sizeBytes: snap.sizeBytes,
  });
  await catalog.reportStep(a.operationId, 'swapping');
  // Not cancelled mid-rename: the rollback must not run while the swap still moves directories.
  await CancellationScope.nonCancellable(() => control.swapRoot(a.targetSandboxId, a.operationId));
  return { sha256: snap.sha256, size_bytes: snap.sizeBytes };
}

/**
 * Makes the swap final. The previous root is renamed aside and deleted once the operation has
 * reported success, so the caller does not wait for the deletion.
 */
export async function finishSwap(control: ReturnType<typeof hostActivities>['control'], saga: Saga, sandboxId: string, operationId: string): Promise<void> {
  deprecatePatch(DISCARD_ROOT_AFTER_SUCCESS);
  await control.retireRoot(sandboxId, operationId);
  saga.afterSuccess('remove the previous root', () => control.discardOldRoot(sandboxId, operationId));
}

/**
 * Steps after a commit point that the result depends on only for its warnings: each is tried in
 * turn and a failure becomes a warning, never a rollback.
 */
export async function afterCommit(steps: ([string, () => Promise<unknown>] | undefined)[]): Promise<string[]> {
  const warnings: string[] = [];
  for (const step of steps) {
    if (!step) continue;
    try {
      await step[1]();
    } catch (err) {
      warnings.push(`${step[0]} failed: ${describeFailure(err).message}`);
    }
  }
  return warnings;
}
