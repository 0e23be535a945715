import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { extractSnapshot } from './support/snapshot-tree.js';
import { getSnapshot, markSnapshotReady, reserveSnapshot } from '../src/catalog/snapshots.js';
import { getSandbox } from '../src/catalog/sandboxes.js';
import { newSnapshotId } from '../src/shared/ids.js';
import { sleep, waitFor } from './support/wait.js';

let stack: TestStack;
let apiKey: string;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  stack = await startStack({ store: 'fs', catalog: 'postgres', api: true });
  apiKey = (await stack.newAccount()).apiKey;
  api = apiClient(stack.apiUrl!, apiKey);
});
afterAll(async () => stack?.close());

const AUTO_NAME = /^auto-pause-\d{8}T\d{6}Z$/;
const COUNTER = ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > counter; sleep 0.05; done'];

function rootFile(id: string, name: string): string {
  return path.join(stack.runtime.rootDir(id), name);
}

async function counterMoves(id: string): Promise<boolean> {
  const before = fs.readFileSync(rootFile(id, 'counter'), 'utf8');
  await sleep(400);
  return fs.readFileSync(rootFile(id, 'counter'), 'utf8') !== before;
}

async function sandboxState(id: string): Promise<string> {
  const r = await api.call('GET', `/v1/sandboxes/${id}`);
  expect(r.status).toBe(200);
  return r.body.state;
}

async function snapshotsOf(id: string): Promise<any[]> {
  const r = await api.call('GET', `/v1/sandboxes/${id}/snapshots`);
  expect(r.status).toBe(200);
  return r.body.snapshots;
}

async function pauseOps(id: string): Promise<any[]> {
  const r = await api.call('GET', `/v1/operations?sandbox_id=${id}&type=pause`);
  expect(r.status).toBe(200);
  return r.body.operations;
}

async function pause(id: string) {
  const r = await api.call('POST', `/v1/sandboxes/${id}/pause`);
  expect(r.status).toBe(202);
  expect(r.body.operation.type).toBe('pause');
  return api.waitOp(r.body.operation.id);
}

describe('pause and resume', () => {
  it('pause stops the processes and leaves a ready auto snapshot; resume continues them', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    fs.writeFileSync(rootFile(id, 'data.txt'), 'hello\n');
    await api.exec(id, COUNTER, true);
    await waitFor(() => fs.existsSync(rootFile(id, 'counter')), 5000, 'the counter to start');
    expect(await counterMoves(id)).toBe(true);

    const op = await pause(id);
    expect(op.status).toBe('succeeded');
    expect(op.progress.step).toBe('done');
    expect(await sandboxState(id)).toBe('paused');
    expect(await stack.runtime.processState(id)).toBe('stopped');
    expect(await counterMoves(id)).toBe(false);

    const snaps = await snapshotsOf(id);
    expect(snaps).toHaveLength(1);
    const [snap] = snaps;
    expect(snap.kind).toBe('auto');
    expect(snap.state).toBe('ready');
    expect(snap.name).toMatch(AUTO_NAME);
    expect(op.result).toEqual({ snapshot_id: snap.id });
    const row = (await getSnapshot(stack.db, snap.id))!;
    expect(await stack.store.head(row.object_key)).toEqual({ key: row.object_key, size: Number(row.manifest_bytes) });

    // While paused, exec is refused rather than hanging on a stopped agent.
    const exec = await api.call('POST', `/v1/sandboxes/${id}/exec`, { command: ['true'] });
    expect(exec.status).toBe(409);
    expect(exec.body.error.code).toBe('invalid_state');

    const resumed = await api.call('POST', `/v1/sandboxes/${id}/resume`);
    expect(resumed.status).toBe(200);
    expect(resumed.body.id).toBe(id);
    expect(resumed.body.state).toBe('running');
    expect(await sandboxState(id)).toBe('running');
    expect(await stack.runtime.processState(id)).toBe('running');
    expect(await counterMoves(id)).toBe(true);
    // Resume takes no snapshot.
    expect(await snapshotsOf(id)).toHaveLength(1);
  });

  it('a pause of a paused sandbox does nothing, and a snapshot of it leaves it paused', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    await api.exec(id, COUNTER, true);
    expect((await pause(id)).status).toBe('succeeded');
    const manual = await api.snapshot(id, 'while-paused');
    expect(manual.op.status).toBe('succeeded');
    expect(await stack.runtime.processState(id)).toBe('stopped');
    expect(await sandboxState(id)).toBe('paused');
    const again = await pause(id);
    expect(again.status).toBe('succeeded');
    expect(again.result).toEqual({ already_paused: true });
    expect((await snapshotsOf(id)).map((s) => s.kind).sort()).toEqual(['auto', 'manual']);
    expect(await sandboxState(id)).toBe('paused');
    expect(await stack.runtime.processState(id)).toBe('stopped');
  });

  it('a pause whose timestamped name is taken (pause, resume, pause within a second) still pauses with its own snapshot', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const sandbox = (await getSandbox(stack.db, id))!;
    await api.exec(id, COUNTER, true);
    // Auto snapshots named for every second around now, as quick pause/resume cycles leave them.
    const taken: string[] = [];
    for (let t = Date.now() - 2000; t <= Date.now() + 4000; t += 1000) {
      const name = `auto-pause-${new Date(t).toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '')}`;
      const snapId = newSnapshotId();
      await reserveSnapshot(stack.db, { id: snapId, accountId: sandbox.account_id, sandboxId: id, name, kind: 'auto' }, stack.config.limits);
      await markSnapshotReady(stack.db, snapId, 1, '0'.repeat(64));
      taken.push(name);
    }
    const op = await pause(id);
    expect(op.status, JSON.stringify(op.error)).toBe('succeeded');
    const snap = (await getSnapshot(stack.db, op.result.snapshot_id))!;
    expect(snap).toMatchObject({ kind: 'auto', state: 'ready', sandbox_id: id });
    expect(snap.name).toMatch(AUTO_NAME);
    expect(taken).not.toContain(snap.name);
    expect(await sandboxState(id)).toBe('paused');
    expect(await stack.runtime.processState(id)).toBe('stopped');
  });

  it('the auto snapshot holds every write acknowledged before the pause', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    // Each line is appended before its number is acknowledged (atomically) in `ack`.
    await api.exec(id, ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i >> log; echo $i > ack.tmp; mv ack.tmp ack; done'], true);
    const ackValue = () => {
      try {
        return Number(fs.readFileSync(rootFile(id, 'ack'), 'utf8').trim() || '0');
      } catch {
        return 0;
      }
    };
    await waitFor(() => ackValue() >= 50, 10_000, 'the writer to acknowledge 50 lines');
    const acked = ackValue();

    const op = await pause(id);
    expect(op.status).toBe('succeeded');
    expect(await stack.runtime.processState(id)).toBe('stopped');
    const snapshotId = op.result.snapshot_id as string;
    const row = (await getSnapshot(stack.db, snapshotId))!;
    expect(row.kind).toBe('auto');
    expect(row.state).toBe('ready');

    const out = path.join(stack.dir, `extract-${snapshotId}`);
    await extractSnapshot(stack, snapshotId, out);

    const log = fs.readFileSync(path.join(out, 'log'), 'utf8');
    const lines = log.split('\n');
    expect(lines.pop()).toBe(''); // whole lines only
    const numbers = lines.map(Number);
    expect(numbers.length).toBeGreaterThanOrEqual(acked);
    numbers.forEach((n, i) => {
      if (n !== i + 1) throw new Error(`log line ${i + 1} is ${JSON.stringify(lines[i])}`);
    });
    // The writer is stopped, so the tree on disk is still exactly what the snapshot holds.
    expect(log).toBe(fs.readFileSync(rootFile(id, 'log'), 'utf8'));
    expect(Number(fs.readFileSync(path.join(out, 'ack'), 'utf8'))).toBeLessThanOrEqual(numbers.length);
  });
});

describe('idle timeout', () => {
  it('an idle sandbox pauses itself once, with exactly one auto snapshot', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 2 });
    expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.idle_timeout_s).toBe(2);
    await api.exec(id, COUNTER, true);
    await waitFor(async () => (await sandboxState(id)) === 'paused', 15_000, 'the idle pause');
    const ops = await pauseOps(id);
    expect(ops).toHaveLength(1);
    const op = await api.waitOp(ops[0].id);
    expect(op.status).toBe('succeeded');
    expect(await stack.runtime.processState(id)).toBe('stopped');
    // Staying idle while paused starts no second pause.
    await sleep(5000);
    expect(await pauseOps(id)).toHaveLength(1);
    const snaps = await snapshotsOf(id);
    expect(snaps).toHaveLength(1);
    expect(snaps[0]).toMatchObject({ kind: 'auto', state: 'ready' });
    expect(snaps[0].name).toMatch(AUTO_NAME);
    expect(op.result).toEqual({ snapshot_id: snaps[0].id });
    expect(await sandboxState(id)).toBe('paused');

    // Resume restarts the idle clock: running for a while, then paused once more.
    expect((await api.call('POST', `/v1/sandboxes/${id}/resume`)).status).toBe(200);
    await sleep(1000);
    expect(await sandboxState(id)).toBe('running');
    await waitFor(async () => (await sandboxState(id)) === 'paused', 15_000, 'the second idle pause');
    const after = await pauseOps(id);
    expect(after).toHaveLength(2);
    expect((await api.waitOp(after[0].id)).status).toBe('succeeded');
    expect((await snapshotsOf(id)).filter((s) => s.kind === 'auto' && s.state === 'ready')).toHaveLength(2);
  });

  it('file activity keeps a sandbox running past its idle timeout', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 2 });
    const until = Date.now() + 4500;
    let n = 0;
    while (Date.now() < until) {
      const r = await api.call('PUT', `/v1/sandboxes/${id}/files/activity.txt`, `write ${++n}\n`);
      expect(r.status).toBe(204);
      await sleep(700);
    }
    expect(n).toBeGreaterThanOrEqual(6);
    expect(await sandboxState(id)).toBe('running');
    expect(await pauseOps(id)).toHaveLength(0);
    expect(await snapshotsOf(id)).toHaveLength(0);
    // Once the activity stops, the idle clock runs out.
    await waitFor(async () => (await sandboxState(id)) === 'paused', 15_000, 'the idle pause after the activity');
    expect(await pauseOps(id)).toHaveLength(1);
  });

  it('idle_timeout_s 0 never pauses', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    await sleep(4000);
    expect(await sandboxState(id)).toBe('running');
    expect(await pauseOps(id)).toHaveLength(0);
    expect(await snapshotsOf(id)).toHaveLength(0);
  });

  it('duplicate idle-timeout events racing a manual pause make one pause and one auto snapshot', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    await api.exec(id, COUNTER, true);
    const admin = apiClient(stack.apiUrl!, stack.config.adminToken);
    const calls = await Promise.all([
      ...Array.from({ length: 5 }, () => api.call('POST', `/v1/sandboxes/${id}/idle-timeout`)),
      admin.call('POST', `/v1/sandboxes/${id}/idle-timeout`),
      api.call('POST', `/v1/sandboxes/${id}/pause`),
    ]);
    const opIds: string[] = [];
    for (const r of calls) {
      if (r.status === 202) opIds.push(r.body.operation.id);
      else expect(r).toMatchObject({ status: 200, body: { operation: null, state: 'paused' } });
    }
    // The manual pause always gets an operation.
    expect(calls[6]!.status).toBe(202);
    const ops = await Promise.all(opIds.map((o) => api.waitOp(o, 30_000)));
    expect(ops.map((o) => o.status)).toEqual(ops.map(() => 'succeeded'));
    const took = ops.filter((o) => o.result.snapshot_id);
    expect(took).toHaveLength(1);
    for (const o of ops) if (!o.result.snapshot_id) expect(o.result).toEqual({ already_paused: true });

    expect(await sandboxState(id)).toBe('paused');
    expect(await stack.runtime.processState(id)).toBe('stopped');
    const snaps = await snapshotsOf(id);
    expect(snaps).toHaveLength(1);
    expect(snaps[0]).toMatchObject({ id: took[0].result.snapshot_id, kind: 'auto', state: 'ready' });

    // A later event on the paused sandbox is answered without an operation.
    const late = await admin.call('POST', `/v1/sandboxes/${id}/idle-timeout`);
    expect(late).toMatchObject({ status: 200, body: { operation: null, state: 'paused' } });
  });

  it('the idle-timeout hook refuses callers without a credential and other accounts', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const anon = await apiClient(stack.apiUrl!).call('POST', `/v1/sandboxes/${id}/idle-timeout`);
    expect(anon.status).toBe(401);
    const other = apiClient(stack.apiUrl!, (await stack.newAccount('other')).apiKey);
    const r = await other.call('POST', `/v1/sandboxes/${id}/idle-timeout`);
    expect(r.status).toBe(404);
    expect(await sandboxState(id)).toBe('running');
    expect(await pauseOps(id)).toHaveLength(0);
  });
});
