/**
 * The worker-kill matrix (test/worker-kill-matrix.test.ts, test/worker-kill-control.test.ts): the
 * worker is SIGKILLed at each step of each operation type, then a new worker is started. The
 * operation must end within a bound (succeed: every step is retried), no sandbox is left stopped
 * unless it was paused, what the operation produced is byte for byte right, and the store holds no
 * orphaned object or open upload.
 *
 * The kill moment is exact: the worker (support/worker-process.ts, CAGED_TEST_HOLD) stops the first
 * time an activity of the operation's workflow reaches the case's fault point and prints
 * "held <point>"; the test then SIGKILLs it. Points are `activity:<name>` (the entry of any activity,
 * local catalog activities included) or the data movers' own points (upload:progress,
 * restore:extracting, restore:swapped, restore:committed, export:progress).
 */
import type { ChildProcess } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { alive, killChild, startWorkerProcess, waitForOutput } from './processes.js';
import { finalAttempt } from './history.js';
import { stoppedGroupMembers } from './sandbox-procs.js';
import { matrixStack, WORKFLOW_TYPE, type OpType } from './op-matrix.js';

export interface KillCase {
  op: OpType;
  /** Where the worker is held and killed. */
  point: string;
  /** The activity that was running, whose retry proves the kill mattered. */
  activity: string;
  /** Catalog steps are local activities: their retry shows as a timed-out workflow task. */
  local?: boolean;
  /**
   * Host control steps have no heartbeat: a dead worker's attempt is retried only after their
   * 60 s start-to-close timeout, so their cases need a longer bound (see the report).
   */
  slow?: boolean;
}

export const KILL_CASES: KillCase[] = [
  { op: 'create_snapshot', point: 'activity:beginSnapshot', activity: 'beginSnapshot', local: true },
  { op: 'create_snapshot', point: 'activity:snapshotSandbox', activity: 'snapshotSandbox' },
  { op: 'create_snapshot', point: 'upload:progress', activity: 'snapshotSandbox' },
  { op: 'create_snapshot', point: 'activity:markSnapshotReady', activity: 'markSnapshotReady', local: true },
  { op: 'pause', point: 'activity:quiesceSandbox', activity: 'quiesceSandbox', slow: true },
  { op: 'pause', point: 'activity:setSandboxState', activity: 'setSandboxState', local: true },
  { op: 'pause', point: 'upload:progress', activity: 'snapshotSandbox' },
  { op: 'pause', point: 'activity:markSnapshotReady', activity: 'markSnapshotReady', local: true },
  { op: 'restore', point: 'activity:pauseSandbox', activity: 'pauseSandbox', slow: true },
  { op: 'restore', point: 'restore:extracting', activity: 'stageSnapshot' },
  { op: 'restore', point: 'restore:swapped', activity: 'swapRoot', slow: true },
  { op: 'restore', point: 'restore:committed', activity: 'retireRoot', slow: true },
  { op: 'fork', point: 'activity:createEmptySandbox', activity: 'createEmptySandbox', slow: true },
  { op: 'fork', point: 'restore:extracting', activity: 'stageSnapshot' },
  { op: 'fork', point: 'restore:swapped', activity: 'swapRoot', slow: true },
  { op: 'fork', point: 'activity:setSandboxState', activity: 'setSandboxState', local: true },
  { op: 'export', point: 'export:progress', activity: 'exportArchive' },
  { op: 'export', point: 'activity:downloadUrl', activity: 'downloadUrl', local: true },
  { op: 'import', point: 'activity:convertImport', activity: 'convertImport' },
  { op: 'import', point: 'activity:markSnapshotReady', activity: 'markSnapshotReady', local: true },
  { op: 'delete_snapshot', point: 'activity:beginDeleteSnapshot', activity: 'beginDeleteSnapshot', local: true },
  { op: 'delete_snapshot', point: 'activity:deleteSnapshotObjects', activity: 'deleteSnapshotObjects', local: true },
  { op: 'delete_snapshot', point: 'activity:markSnapshotDeleted', activity: 'markSnapshotDeleted', local: true },
];

/** Registers the cases' tests on a stack of their own. */
export function killMatrix(cases: KillCase[]): void {
  const env = matrixStack('worker-kill');

  describe.each(cases)('worker SIGKILLed in $op at $point', (c) => {
    it('a new worker finishes the operation; nothing left stopped, broken or orphaned', { timeout: c.slow ? 240_000 : 150_000 }, async () => {
      const { stack, api, m } = env;
      const held = await startWorkerProcess(stack, `kill-${c.op}-${c.point.replace(/\W+/g, '_')}`, { env: { CAGED_TEST_HOLD: `${WORKFLOW_TYPE[c.op]}:${c.point}` } });
      const started = await m.startOperation(c.op);
      await waitForOutput(held, `held ${c.point}\n`, 60_000);
      const killedPid = held.pid!;
      await killChild(held, 'SIGKILL');
      expect(held.signalCode).toBe('SIGKILL');
      expect(m.pidGone(killedPid)).toBe(true);
      expect((await api.call('GET', `/v1/operations/${started.opId}`)).body.status).toBe('running');

      const t0 = Date.now();
      const replacement: ChildProcess = await startWorkerProcess(stack, `replacement-${c.op}-${c.point.replace(/\W+/g, '_')}`);
      const op = await api.waitOp(started.opId, c.slow ? 150_000 : 90_000);
      const took = Date.now() - t0;
      expect(op.status, JSON.stringify(op)).toBe('succeeded');
      expect(took).toBeLessThan(c.slow ? 150_000 : 90_000);
      await stack.client.workflow.getHandle(started.opId).result();
      expect(alive(replacement)).toBe(true);

      // The kill mattered: the held step ran again on the new worker.
      if (c.local) expect(await m.workflowTaskTimedOut(started.opId)).toBe(true);
      else expect(await finalAttempt(stack.client, started.opId, c.activity)).toBeGreaterThanOrEqual(2);

      await started.verify();
      if (started.sandbox) {
        const stopped = await stoppedGroupMembers(started.sandbox.pid);
        if (started.sandbox.paused) expect(stopped.length).toBeGreaterThan(0);
        else expect(stopped).toEqual([]);
        expect(m.leftovers(started.sandbox.id)).toEqual([]);
      }
      // ORACLE: the one call that judges the whole stack (swap in verifyStack there).
      await m.checkStack(started.sandboxIds);
    });
  });
}
