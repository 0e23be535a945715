import { CancellationScope } from '@temporalio/workflow';
import type { ForkInput } from '../shared/definitions.js';
import { catalog, hostActivities, reportStep } from './activities.js';
import { runOperation, throwIfCancelled } from './operation.js';
import { finishSwap, restoreInto } from './restore-steps.js';

/** A new sandbox with the snapshot's filesystem; a failed fork removes the half-made sandbox. */
export async function forkWorkflow(input: ForkInput) {
  return runOperation(input.operationId, async (saga) => {
    const { control } = hostActivities(input.hostQueue);
    saga.add('remove half-made sandbox', async () => {
      await control.destroySandbox(input.newSandboxId);
      await catalog.setSandboxState(input.newSandboxId, 'deleted');
    });
    await reportStep(input.operationId, 'creating');
    // Disk steps are not cancelled half-way, so the removal never races with them.
    await CancellationScope.nonCancellable(() => control.createEmptySandbox(input.newSandboxId));
    const out = await restoreInto({ operationId: input.operationId, snapshotId: input.snapshotId, targetSandboxId: input.newSandboxId, hostQueue: input.hostQueue }, saga);
    // A cancel that arrived while the disk steps ran is honoured here, before the commit point.
    throwIfCancelled();
    await CancellationScope.nonCancellable(async () => {
      await finishSwap(control, saga, input.newSandboxId, input.operationId);
      await catalog.setSandboxState(input.newSandboxId, 'running');
      // Commit point: the new sandbox exists and is recorded running; nothing may remove it now.
      saga.commit();
    });
    return { sandbox_id: input.newSandboxId, snapshot_id: input.snapshotId, ...out };
  }, input.deadlineSeconds);
}
