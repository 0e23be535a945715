import type { ActivityDeps } from './deps.js';
import { uploadProgress, uploadSnapshot, type UploadSnapshotInput } from './snapshot-upload.js';
import { keepHeartbeating, progressReporter } from './progress.js';
import { setOperationProgress } from '../catalog/operations.js';
import { stageSnapshot, type StageSnapshotInput } from './snapshot-restore.js';

/**
 * The short control steps on a host (signals, renames, removals). They heartbeat every second for as
 * long as they run, so a workflow that gives them a heartbeatTimeout notices a dead worker within
 * seconds instead of after their start-to-close timeout, while the sandbox may be stopped.
 */
const CONTROL_STEPS = ['quiesceSandbox', 'resumeSandbox', 'pauseSandbox', 'destroySandbox', 'createEmptySandbox', 'swapRoot', 'rollbackRoot', 'retireRoot', 'discardOldRoot'] as const;

function withHeartbeats<T extends Record<string, (...args: any[]) => Promise<any>>>(activities: T, names: readonly string[]): T {
  const out: Record<string, unknown> = { ...activities };
  for (const name of names) {
    const fn = activities[name];
    if (fn) out[name] = (...args: unknown[]) => keepHeartbeating(() => ({ step: name }), () => fn(...args));
  }
  return out as T;
}

/** Activities that touch a sandbox's disk or processes: they run on its host's task queue. */
export function createSandboxActivities(deps: ActivityDeps) {
  return withHeartbeats(sandboxActivities(deps), CONTROL_STEPS);
}

function sandboxActivities(deps: ActivityDeps) {
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

    /**
     * Quiesce, upload and resume as one step: the sandbox is stopped only while its tree is read,
     * and a snapshot makes one round trip through the server instead of three. A retry quiesces
     * again; if this worker dies, the workflow's compensation resumes the sandbox.
     */
    async snapshotSandbox(input: UploadSnapshotInput & { quiesce: boolean; resume: boolean; quiesceStep?: string }) {
      const resume = () => runtime.resume(input.sandboxId);
      let stopped = false;
      const quiesce = async () => {
        // Progress only: a catalog that is away for a moment must not fail (and so re-run) the snapshot.
        await setOperationProgress(deps.db, input.operationId, { step: input.quiesceStep ?? 'quiescing' }).catch((err) =>
          deps.log.warn({ err: (err as Error).message, operationId: input.operationId }, 'could not record the quiescing step'),
        );
        stopped = true;
        await runtime.quiesce(input.sandboxId);
      };
      try {
        // Quiesced once the store and the catalog have answered; resumed as soon as tar has read
        // the tree, before the archive is stored and synced.
        return await uploadSnapshot(deps, input, uploadProgress(deps, input), input.resume ? resume : undefined, input.quiesce ? quiesce : undefined);
      } catch (err) {
        // A quiesce that failed half-way, or an upload that failed after it, must not leave the
        // processes stopped until the workflow's compensation, which runs only after the last retry.
        if (input.resume && stopped) await resume().catch(() => {});
        throw err;
      }
    },

    async createEmptySandbox(sandboxId: string): Promise<void> {
      await runtime.createEmpty(sandboxId);
    },

    async stageSnapshot(input: StageSnapshotInput): Promise<void> {
      await stageSnapshot(deps, input, progressReporter(deps.db, input.operationId, input.step ?? 'extracting'));
    },

    /** Staging becomes the root; the old root is kept beside it until commit or rollback. */
    async swapRoot(sandboxId: string, operationId: string): Promise<void> {
      await runtime.swapIn(sandboxId, operationId);
      await deps.faultHook?.('restore:swapped', { sandboxId });
    },

    async rollbackRoot(sandboxId: string, operationId: string): Promise<void> {
      await runtime.rollbackSwap(sandboxId, operationId);
    },

    /** The restore is final: the previous root can no longer come back; discardOldRoot deletes it. */
    async retireRoot(sandboxId: string, operationId: string): Promise<void> {
      await runtime.retireSwap(sandboxId, operationId);
      await deps.faultHook?.('restore:committed', { sandboxId });
    },

    async discardOldRoot(sandboxId: string, operationId: string): Promise<void> {
      await runtime.removeRetired(sandboxId, operationId);
    },
  };
}
