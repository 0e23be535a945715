import { CancellationScope, patched } from '@temporalio/workflow';
import type { RestoreInput } from '../shared/definitions.js';
import { catalog, hostActivities } from './activities.js';
import { runOperation } from './operation.js';
import { afterCommit, finishSwap, restoreInto } from './restore-steps.js';
import { COMMIT_POINTS } from './patches.js';

/**
 * Replaces the target's filesystem with the snapshot's, exactly. Its processes are stopped
 * meanwhile, and it ends in the state it had before (running or paused).
 */
export async function restoreWorkflow(input: RestoreInput) {
  return runOperation(input.operationId, async (saga) => {
    const { control } = hostActivities(input.hostQueue);
    const before = await catalog.getSandboxState(input.targetSandboxId);
    await catalog.reportStep(input.operationId, 'quiescing');
    if (before !== 'paused') saga.add('resume target', () => control.resumeSandbox(input.targetSandboxId));
    // Steps on the disk and processes are not cancelled half-way: a cancelled activity would go on
    // running on the host while the compensations already undo it.
    await CancellationScope.nonCancellable(() => control.pauseSandbox(input.targetSandboxId));

    const out = await restoreInto({ ...input }, saga);

    await catalog.reportStep(input.operationId, 'finalizing');
    if (!patched(COMMIT_POINTS)) {
      // Once the previous root is retired the restore cannot be undone, so it is finished, not cancelled.
      await CancellationScope.nonCancellable(async () => {
        await finishSwap(control, saga, input.targetSandboxId, input.operationId);
        if (before !== 'paused') await control.resumeSandbox(input.targetSandboxId);
        await catalog.touchSandbox(input.targetSandboxId);
      });
      return { snapshot_id: input.snapshotId, sandbox_id: input.targetSandboxId, ...out };
    }
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
    return { snapshot_id: input.snapshotId, sandbox_id: input.targetSandboxId, ...out, ...(warnings.length ? { warnings } : {}) };
  }, input.deadlineSeconds);
}
