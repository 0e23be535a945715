import { CancellationScope, isCancellation, uuid4, workflowInfo } from '@temporalio/workflow';
import type { PauseInput } from '../shared/definitions.js';
import { catalog, hostActivities, reportStep } from './activities.js';
import { runOperation } from './operation.js';
import { takeSnapshot } from './snapshot-steps.js';
import { describeFailure } from './failure.js';

export interface PauseResult {
  already_paused?: boolean;
  snapshot_id?: string;
  replaced?: string;
  snapshot_skipped?: { code: string; reason: string };
}

const stamp = (ms: number) => new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');

/**
 * Stops the sandbox's processes, flushes its tree and takes an automatic snapshot of it; the
 * sandbox stays paused. A pause of a paused sandbox does nothing, which makes duplicate idle
 * events and races with a manual pause produce one pause and one snapshot.
 */
export async function pauseWorkflow(input: PauseInput): Promise<PauseResult> {
  return runOperation(input.operationId, async (saga) => {
    const state = await catalog.getSandboxState(input.sandboxId);
    if (state === 'paused') return { already_paused: true };
    const { control } = hostActivities(input.hostQueue);
    await reportStep(input.operationId, 'quiescing');
    saga.add('resume sandbox', async () => {
      await control.resumeSandbox(input.sandboxId);
      await catalog.setSandboxState(input.sandboxId, 'running');
    });
    // Not cancelled half-way: the compensation's resume must not race a SIGSTOP still landing.
    await CancellationScope.nonCancellable(() => control.quiesceSandbox(input.sandboxId));
    await catalog.setSandboxState(input.sandboxId, 'paused');

    const snapshotId = `snap-${uuid4().replace(/-/g, '').slice(0, 8)}`;
    const startedAt = workflowInfo().startTime.getTime();
    // The snapshot has undo steps of its own: when it fails the sandbox stays paused (its disk
    // holds every write) and only the snapshot is rolled back.
    const snapSaga = saga.child();
    try {
      const snap = await takeSnapshot(
        {
          operationId: input.operationId,
          accountId: input.accountId,
          sandboxId: input.sandboxId,
          snapshotId,
          // A pause, resume and pause within one second would reuse the timestamped name of a
          // live snapshot: the name moves on to the next free second instead.
          name: (attempt) => `auto-pause-${stamp(startedAt + attempt * 1000)}`,
          kind: 'auto',
          hostQueue: input.hostQueue,
          resumeAfter: false,
        },
        snapSaga,
      );
      return { snapshot_id: snap.snapshot_id, ...(snap.replaced ? { replaced: snap.replaced } : {}) };
    } catch (err) {
      const why = describeFailure(err);
      // A cancelled pause is undone whole: its snapshot here, the sandbox running again by the
      // parent saga once this rethrows.
      const cancelled = isCancellation(err) || CancellationScope.current().consideredCancelled;
      const undoFailed = await snapSaga.compensate(cancelled ? { code: 'cancelled', message: 'the operation was cancelled' } : why);
      if (cancelled) throw err;
      const reason = undoFailed.length ? `${why.message} (rollback steps failed: ${undoFailed.join(', ')})` : why.message;
      return { snapshot_skipped: { code: why.code, reason } };
    }
  }, input.deadlineSeconds);
}
