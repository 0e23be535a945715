import { uuid4, workflowInfo } from '@temporalio/workflow';
import type { PauseInput } from '../shared/definitions.js';
import { catalog, hostActivities } from './activities.js';
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
    await catalog.reportStep(input.operationId, 'quiescing');
    saga.add('resume sandbox', async () => {
      await control.resumeSandbox(input.sandboxId);
      await catalog.setSandboxState(input.sandboxId, 'running');
    });
    await control.quiesceSandbox(input.sandboxId);
    await catalog.setSandboxState(input.sandboxId, 'paused');

    const snapshotId = `snap-${uuid4().replace(/-/g, '').slice(0, 8)}`;
    const startedAt = workflowInfo().startTime.getTime();
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
        saga,
      );
      return { snapshot_id: snap.snapshot_id, ...(snap.replaced ? { replaced: snap.replaced } : {}) };
    } catch (err) {
      const why = describeFailure(err);
      // At the snapshot limit with nothing replaceable, the pause still happens and says why.
      if (why.code !== 'limit_exceeded') throw err;
      await catalog.markSnapshotFailed(snapshotId, why.code, why.message);
      return { snapshot_skipped: { code: why.code, reason: why.message } };
    }
  });
}
