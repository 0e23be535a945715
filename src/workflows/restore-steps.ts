import { CancellationScope } from '@temporalio/workflow';
import { catalog, hostActivities, reportStep } from './activities.js';
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
  const { snap } = await stageInto(a, saga);
  await reportStep(a.operationId, 'swapping');
  await swapInto(a);
  return { sha256: snap.sha256, size_bytes: snap.sizeBytes };
}

/**
 * Claims the snapshot and extracts it beside the target's root, verifying its sha256; the root and
 * the target's processes are not touched. The undo removes the staging directory (and, once
 * swapped, puts the previous root back); the returned function disarms it.
 */
export async function stageInto(a: RestoreArgs, saga: Saga) {
  const { control, data } = hostActivities(a.hostQueue);
  const snap = await catalog.claimSnapshotForRead(a.snapshotId);
  await reportStep(a.operationId, 'extracting', snap.sizeBytes);
  const disarmRollback = saga.add('roll back root', () => control.rollbackRoot(a.targetSandboxId, a.operationId));
  await data.stageSnapshot({
    operationId: a.operationId,
    sandboxId: a.targetSandboxId,
    snapshotId: a.snapshotId,
    objectKey: snap.objectKey,
    sha256: snap.sha256,
    sizeBytes: snap.sizeBytes,
    step: 'extracting',
  });
  return { snap, disarmRollback };
}

/** Staging becomes the root. Not cancelled mid-rename: the rollback must not run while the swap still moves directories. */
export async function swapInto(a: RestoreArgs): Promise<void> {
  const { control } = hostActivities(a.hostQueue);
  await CancellationScope.nonCancellable(() => control.swapRoot(a.targetSandboxId, a.operationId));
}

/**
 * Makes the swap final. The previous root is renamed aside and deleted once the operation has
 * reported success, so the caller does not wait for the deletion.
 */
export async function finishSwap(control: ReturnType<typeof hostActivities>['control'], saga: Saga, sandboxId: string, operationId: string): Promise<void> {
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
