import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/activity';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { replayHistories } from '../src/replay/replay-histories.js';
import { runCli, type CliResult } from './support/cli.js';

/** Sandboxes whose next snapshot upload fails once, with a retryable error, mid-stream. */
const flaky = new Set<string>();
/** Sandboxes whose upload fails twice, then waits in its third attempt until released. */
const stalled = new Map<string, { failures: number; entered: boolean; release: Promise<void> }>();
let stack: TestStack;
let api: ReturnType<typeof apiClient>;
let apiKey: string;

function cli(args: string[]): Promise<CliResult> {
  return runCli(args, { CAGED_API_URL: stack.apiUrl!, CAGED_API_KEY: apiKey });
}

beforeAll(async () => {
  stack = await startStack({
    store: 'fs',
    catalog: 'postgres',
    api: true,
    faultHook: async (point, info) => {
      if (point !== 'upload:progress' || !info.sandboxId) return;
      if (flaky.delete(info.sandboxId)) throw ApplicationFailure.create({ type: 'injected_fault', message: 'injected fault: flaky upload' });
      const stall = stalled.get(info.sandboxId);
      if (!stall) return;
      if (stall.failures < 2) {
        stall.failures++;
        throw ApplicationFailure.create({ type: 'injected_fault', message: `injected fault: failure ${stall.failures}` });
      }
      stall.entered = true;
      await stall.release;
    },
  });
  const acct = await stack.newAccount('timeline');
  apiKey = acct.apiKey;
  api = apiClient(stack.apiUrl!, apiKey);
});
afterAll(async () => stack?.close());

describe('operation timeline and replay', () => {
  let opId: string;

  it('a snapshot whose upload failed once shows that activity with 2 attempts and the injected error', { timeout: 90_000 }, async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    flaky.add(id);
    const { op } = await api.snapshot(id, 'flaky');
    expect(op.status, JSON.stringify(op.error)).toBe('succeeded');
    opId = op.id;
    expect(flaky.has(id)).toBe(false);

    const r = await api.call('GET', `/v1/operations/${opId}/timeline`);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ operation_id: opId, workflow_type: 'createSnapshotWorkflow', status: 'completed', step: 'done' });
    const upload = r.body.entries.find((e: { name: string }) => e.name === 'snapshotSandbox');
    expect(upload).toMatchObject({ kind: 'activity', status: 'completed', attempts: 2 });
    expect(upload.failures).toEqual([{ attempt: 1, type: 'injected_fault', message: 'injected fault: flaky upload' }]);
    expect(upload.duration_ms).toBeGreaterThanOrEqual(0);
    // Catalog steps run as local activities: decoded from their markers.
    const names = r.body.entries.map((e: { kind: string; name: string }) => `${e.kind}:${e.name}`);
    expect(names).toContain('local_activity:beginSnapshot');
    expect(names).toContain('local_activity:finishOperation');
    expect(names.indexOf('local_activity:beginSnapshot')).toBeLessThan(names.indexOf('activity:snapshotSandbox'));

    // A local reportStep names its step (an export reports "exporting").
    const exp = await api.call('POST', `/v1/snapshots/${op.result.snapshot_id}/export`, {});
    expect((await api.waitOp(exp.body.operation.id)).status).toBe('succeeded');
    const steps = (await api.call('GET', `/v1/operations/${exp.body.operation.id}/timeline`)).body.entries.filter((e: { kind: string }) => e.kind === 'step');
    expect(steps.map((e: { name: string }) => e.name)).toEqual(['exporting']);

    // Another account sees nothing of it.
    const other = apiClient(stack.apiUrl!, (await stack.newAccount('other')).apiKey);
    expect((await other.call('GET', `/v1/operations/${opId}/timeline`)).status).toBe(404);
    expect((await other.call('GET', `/v1/operations/${opId}/history`)).status).toBe(404);
  });

  it("a running activity's attempts and last failure come from the pending activity", { timeout: 90_000 }, async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    let release!: () => void;
    const stall = { failures: 0, entered: false, release: new Promise<void>((r) => (release = r)) };
    stalled.set(id, stall);
    const posted = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'stalled' });
    expect(posted.status).toBe(202);
    const running = posted.body.operation.id as string;
    try {
      for (let i = 0; !stall.entered; i++) {
        if (i > 600) throw new Error('the third attempt never started');
        await new Promise((r) => setTimeout(r, 100));
      }
      const t = (await api.call('GET', `/v1/operations/${running}/timeline`)).body;
      expect(t.status).toBe('running');
      const upload = t.entries.find((e: { name: string }) => e.name === 'snapshotSandbox');
      expect(upload).toMatchObject({ kind: 'activity', status: 'running', attempts: 3 });
      // The server keeps the failure of the attempt before the current one.
      expect(upload.failures).toEqual([{ attempt: 2, type: 'injected_fault', message: 'injected fault: failure 2' }]);
    } finally {
      release();
    }
    const op = await api.waitOp(running, 60_000);
    expect(op.status).toBe('succeeded');
    const done = (await api.call('GET', `/v1/operations/${running}/timeline`)).body;
    expect(done.entries.find((e: { name: string }) => e.name === 'snapshotSandbox')).toMatchObject({ status: 'completed', attempts: 3 });
  });

  it('caged ops show prints the timeline with the failed attempt', { timeout: 60_000 }, async () => {
    const r = await cli(['ops', 'show', opId]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^status: +succeeded$/m);
    const row = r.stdout.split('\n').find((l) => / snapshotSandbox /.test(l));
    expect(row?.split(/ {2,}/).slice(1, 5)).toEqual(['activity', 'snapshotSandbox', 'completed', '2']);
    expect(r.stdout).toContain('attempt 1 failed: injected_fault: injected fault: flaky upload');
    expect(r.stdout).toMatch(/^workflow: completed$/m);
  });

  it("the finished operation's history replays against the current code", { timeout: 180_000 }, async () => {
    const r = await api.call('GET', `/v1/operations/${opId}/history`);
    expect(r.status).toBe(200);
    const [outcome] = await replayHistories([{ id: opId, json: r.body }], { code: inject('workflowCode') });
    expect(outcome).toEqual({ id: opId, workflowType: 'createSnapshotWorkflow' });

    // The command a user runs: it bundles the workflows itself, as the worker does.
    const cmd = await cli(['ops', 'replay', opId]);
    expect(cmd.code, cmd.stderr).toBe(0);
    expect(cmd.stdout).toBe(`ok: ${opId} (createSnapshotWorkflow) replays against the current code\n`);
  });
});
