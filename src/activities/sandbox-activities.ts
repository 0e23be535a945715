import type { ActivityDeps } from './deps.js';
import { uploadSnapshot, type UploadSnapshotInput } from './snapshot-upload.js';
import { stageSnapshot, type StageSnapshotInput } from './snapshot-restore.js';
import { commitSwap, removeDiscarded, retireSwap, rollbackSwap, swapIn } from '../sandbox/root-swap.js';

/** Activities that touch a sandbox's disk or processes: they run on its host's task queue. */
export function createSandboxActivities(deps: ActivityDeps) {
  const { runtime } = deps;
  return {
    /** Stops the sandbox's processes and flushes its tree; reports whether they were already stopped. */
    async quiesceSandbox(sandboxId: string): Promise<{ wasStopped: boolean }> {
      const before = await runtime.processState(sandboxId);
      await runtime.quiesce(sandboxId);
      return { wasStopped: before === 'stopped' };
    },

    async resumeSandbox(sandboxId: string): Promise<void> {
      await runtime.resume(sandboxId);
    },

    async pauseSandbox(sandboxId: string): Promise<void> {
      await runtime.pause(sandboxId);
    },

    async destroySandbox(sandboxId: string): Promise<void> {
      await runtime.destroy(sandboxId);
    },

    async uploadSnapshot(input: UploadSnapshotInput) {
      return uploadSnapshot(deps, input);
    },

    async createEmptySandbox(sandboxId: string): Promise<void> {
      await runtime.createEmpty(sandboxId);
    },

    async stageSnapshot(input: StageSnapshotInput): Promise<void> {
      await stageSnapshot(deps, input);
    },

    /** Staging becomes the root; the old root is kept beside it until commit or rollback. */
    async swapRoot(sandboxId: string, operationId: string): Promise<void> {
      await swapIn(runtime.sandboxDir(sandboxId), operationId);
      await deps.faultHook?.('restore:swapped', { sandboxId });
    },

    async rollbackRoot(sandboxId: string, operationId: string): Promise<void> {
      await rollbackSwap(runtime.sandboxDir(sandboxId), operationId);
    },

    /** The restore is final: the previous root is deleted. (Workflows started before retireRoot.) */
    async commitRoot(sandboxId: string, operationId: string): Promise<void> {
      await commitSwap(runtime.sandboxDir(sandboxId), operationId);
      await deps.faultHook?.('restore:committed', { sandboxId });
    },

    /** The restore is final: the previous root can no longer come back; discardOldRoot deletes it. */
    async retireRoot(sandboxId: string, operationId: string): Promise<void> {
      await retireSwap(runtime.sandboxDir(sandboxId), operationId);
      await deps.faultHook?.('restore:committed', { sandboxId });
    },

    async discardOldRoot(sandboxId: string, operationId: string): Promise<void> {
      await removeDiscarded(runtime.sandboxDir(sandboxId), operationId);
    },
  };
}
