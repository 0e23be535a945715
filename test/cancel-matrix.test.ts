/**
 * An operation is cancelled through the API at each of its steps. The worker holds the step (see
 * CAGED_TEST_HOLD in test/support/worker-process.ts) until the cancellation reaches it, or for at
 * most 4 s for steps that run non-cancellable; then the operation must be recorded `cancelled` and
 * rolled back, or, past its point of no return, `succeeded` and whole. Either way no sandbox is
 * left stopped unless paused and the stack passes the oracle.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { startWorkerProcess, waitForOutput } from './support/processes.js';
import { stoppedGroupMembers } from './support/sandbox-procs.js';
import { matrixStack, WORKFLOW_TYPE, type OpType } from './support/op-matrix.js';

interface CancelCase {
  op: OpType;
  point: string;
  /**
   * What the operation must end as: before its point of no return it is cancelled; after it, it
   * finishes. A catalog step is a local activity that runs inside a workflow task, so a cancellation
   * that arrives meanwhile takes effect only at the next task: the operation may already be done
   * ('either'; whichever it is, it must be whole or rolled back).
   */
  outcome: 'cancelled' | 'succeeded' | 'either';
}

const CASES: CancelCase[] = [
  { op: 'create_snapshot', point: 'activity:beginSnapshot', outcome: 'either' },
  { op: 'create_snapshot', point: 'activity:snapshotSandbox', outcome: 'cancelled' },
  { op: 'create_snapshot', point: 'upload:progress', outcome: 'cancelled' },
  // The commit step itself is not cancellable: a cancel there ends with the snapshot ready and whole.
  { op: 'create_snapshot', point: 'activity:markSnapshotReady', outcome: 'either' },
  { op: 'pause', point: 'activity:quiesceSandbox', outcome: 'cancelled' },
  { op: 'pause', point: 'activity:setSandboxState', outcome: 'either' },
  { op: 'pause', point: 'upload:progress', outcome: 'cancelled' },
  { op: 'restore', point: 'activity:pauseSandbox', outcome: 'cancelled' },
  { op: 'restore', point: 'restore:extracting', outcome: 'cancelled' },
  { op: 'restore', point: 'restore:swapped', outcome: 'cancelled' },
  { op: 'restore', point: 'restore:committed', outcome: 'succeeded' },
  { op: 'fork', point: 'activity:createEmptySandbox', outcome: 'cancelled' },
  { op: 'fork', point: 'restore:extracting', outcome: 'cancelled' },
  { op: 'fork', point: 'activity:setSandboxState', outcome: 'succeeded' },
  { op: 'export', point: 'export:progress', outcome: 'cancelled' },
  { op: 'import', point: 'activity:convertImport', outcome: 'cancelled' },
  { op: 'delete_snapshot', point: 'activity:beginDeleteSnapshot', outcome: 'either' },
];

const env = matrixStack('cancel-matrix');

/** The operation's history in brief (event kinds, activity and marker names), kept in the run's log directory. */
async function dumpHistory(opId: string): Promise<void> {
  const events = (await env.stack.client.workflow.getHandle(opId).fetchHistory()).events ?? [];
  const lines = events.map((e) => {
    const [kind, attrs] = Object.entries(e).find(([k, v]) => k.endsWith('EventAttributes') && v) ?? ['?', {}];
    const a = attrs as { activityType?: { name?: string }; markerName?: string; details?: Record<string, { payloads?: { data?: Uint8Array }[] }> };
    const la = a.details?.data?.payloads?.[0]?.data;
    return `${e.eventId} ${kind.replace('EventAttributes', '')} ${a.activityType?.name ?? a.markerName ?? ''} ${la ? Buffer.from(la).toString().slice(0, 160) : ''}`;
  });
  fs.writeFileSync(path.join(inject('logDir'), `history-${opId}.txt`), lines.join('\n'));
}

describe.each(CASES)('$op cancelled at $point', (c) => {
  it(`ends ${c.outcome}; rolled back or whole; nothing left stopped or orphaned`, { timeout: 120_000 }, async () => {
    const { stack, api, m } = env;
    const worker = await startWorkerProcess(stack, `cancel-${c.op}-${c.point.replace(/\W+/g, '_')}`, {
      env: { CAGED_TEST_HOLD: `${WORKFLOW_TYPE[c.op]}:${c.point}`, CAGED_TEST_HOLD_MAX_MS: '4000' },
    });
    const started = await m.startOperation(c.op);
    await waitForOutput(worker, `held ${c.point}\n`, 60_000);
    const cancel = await api.call('POST', `/v1/operations/${started.opId}/cancel`);
    expect(cancel.status, JSON.stringify(cancel.body)).toBe(202);

    await api.waitOp(started.opId, 60_000);
    // The workflow closes (its compensations and clean-ups have run) within the same bound; only then is the state final.
    await Promise.race([
      stack.client.workflow.getHandle(started.opId).result().catch(() => {}),
      new Promise((_, reject) => setTimeout(() => reject(new Error('the workflow did not close')), 30_000)),
    ]);
    await dumpHistory(started.opId);
    const op = (await api.call('GET', `/v1/operations/${started.opId}`)).body;
    if (c.outcome === 'either') expect(['cancelled', 'succeeded'], JSON.stringify(op)).toContain(op.status);
    else expect(op.status, JSON.stringify(op)).toBe(c.outcome);
    if (op.status === 'cancelled') {
      expect(op.error?.code).toBe('cancelled');
      await started.rolledBack();
    } else {
      await started.verify();
    }
    if (started.sandbox) {
      const stopped = await stoppedGroupMembers(started.sandbox.pid);
      if (started.sandbox.paused && op.status === 'succeeded') expect(stopped.length).toBeGreaterThan(0);
      else expect(stopped, 'sandbox processes left stopped').toEqual([]);
      expect(m.leftovers(started.sandbox.id)).toEqual([]);
    }
    // ORACLE: the one call that judges the stack (swap in verifyStack there).
    await m.checkStack(started.sandboxIds);
  });
});
