import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { openUploads, packUploads } from './support/s3.js';
import { apiClient } from './support/http.js';
import { getSnapshot, listSandboxSnapshots } from '../src/catalog/snapshots.js';
import { MiB, sleep } from './support/wait.js';
import { faultRegistry, type FaultHook } from './support/faults.js';

const COUNTER = ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > counter; sleep 0.05; done'];

type Api = ReturnType<typeof apiClient>;

async function counterMoves(stack: TestStack, id: string): Promise<boolean> {
  const file = path.join(stack.runtime.rootDir(id), 'counter');
  const before = fs.readFileSync(file, 'utf8');
  await sleep(400);
  return fs.readFileSync(file, 'utf8') !== before;
}

async function startCounter(stack: TestStack, api: Api, id: string) {
  await api.exec(id, COUNTER, true);
  const file = path.join(stack.runtime.rootDir(id), 'counter');
  for (let i = 0; !fs.existsSync(file); i++) {
    if (i > 100) throw new Error('the counter did not start');
    await sleep(50);
  }
}

async function postSnapshot(api: Api, id: string, name: string) {
  const r = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  return { snapshotId: r.body.snapshot.id as string, opId: r.body.operation.id as string };
}

async function pause(api: Api, id: string) {
  const r = await api.call('POST', `/v1/sandboxes/${id}/pause`);
  expect(r.status).toBe(202);
  return api.waitOp(r.body.operation.id);
}

async function resume(api: Api, id: string) {
  const r = await api.call('POST', `/v1/sandboxes/${id}/resume`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body.state).toBe('running');
}

describe.each(['s3', 'fs'] as const)('snapshot limits on the %s store', (storeKind) => {
  let stack: TestStack;
  let api: Api;

  beforeAll(async () => {
    stack = await startStack({
      store: storeKind,
      catalog: 'postgres',
      api: true,
      limits: { maxSnapshotsPerSandbox: 3, maxSnapshotBytes: 1 * MiB, maxAccountBytes: 1.5 * MiB },
    });
    api = apiClient(stack.apiUrl!, (await stack.newAccount()).apiKey);
  });
  afterAll(async () => stack?.close());

  /** Each test has its own account, so the account byte limit of one never touches another. */
  const freshApi = async () => apiClient(stack.apiUrl!, (await stack.newAccount()).apiKey);

  it('at the limit an auto snapshot replaces the oldest auto snapshot, and a manual one is refused', async () => {
    const a = await freshApi();
    const id = await a.createSandbox({ idle_timeout_s: 0 });
    const first = await pause(a, id);
    expect(first.status).toBe('succeeded');
    const oldAuto = first.result.snapshot_id as string;
    await resume(a, id);
    // A second auto snapshot, younger than the first.
    const second = await pause(a, id);
    expect(second.status).toBe('succeeded');
    const youngAuto = second.result.snapshot_id as string;
    expect(second.result).toEqual({ snapshot_id: youngAuto });
    await resume(a, id);
    const m1 = await a.snapshot(id, 'm1');
    expect(m1.op.status).toBe('succeeded');
    const oldKey = (await getSnapshot(stack.db, oldAuto))!.object_key;
    expect(await stack.store.head(oldKey)).not.toBeNull();

    const refused = await a.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'm2' });
    expect(refused.status).toBe(422);
    expect(refused.body.error.code).toBe('limit_exceeded');
    expect(refused.body.error.details).toEqual({ limit: 'snapshots_per_sandbox', max: 3 });

    const third = await pause(a, id);
    expect(third.status).toBe('succeeded');
    const newAuto = third.result.snapshot_id as string;
    expect(third.result).toEqual({ snapshot_id: newAuto, replaced: oldAuto });
    // From the commit point on the replaced snapshot is out of use; it is deleted as clean-up,
    // before the operation's workflow closes.
    expect(['deleting', 'deleted']).toContain((await getSnapshot(stack.db, oldAuto))!.state);
    await stack.client.workflow.getHandle(third.id).result();

    const live = await listSandboxSnapshots(stack.db, id);
    expect(live.map((s) => s.id).sort()).toEqual([newAuto, youngAuto, m1.snapshotId].sort());
    expect(live.every((s) => s.state === 'ready')).toBe(true);
    expect((await getSnapshot(stack.db, oldAuto))!.state).toBe('deleted');
    expect(await stack.store.head(oldKey)).toBeNull();
    expect((await a.call('GET', `/v1/snapshots/${oldAuto}`)).status).toBe(404);
    expect((await a.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('paused');
  });

  it('with only manual snapshots at the limit, pause still pauses and says why it took no snapshot', async () => {
    const a = await freshApi();
    const id = await a.createSandbox({ idle_timeout_s: 0 });
    for (const name of ['m1', 'm2', 'm3']) expect((await a.snapshot(id, name)).op.status).toBe('succeeded');
    await startCounter(stack, a, id);

    const op = await pause(a, id);
    expect(op.status).toBe('succeeded');
    expect(Object.keys(op.result)).toEqual(['snapshot_skipped']);
    expect(op.result.snapshot_skipped.code).toBe('limit_exceeded');
    expect(op.result.snapshot_skipped.reason).toMatch(/snapshots_per_sandbox/);
    expect(op.result.snapshot_skipped.reason).toMatch(/no auto snapshot to replace/);

    expect((await a.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('paused');
    expect(await stack.runtime.processState(id)).toBe('stopped');
    const snaps = (await a.call('GET', `/v1/sandboxes/${id}/snapshots`)).body.snapshots;
    expect(snaps.map((s: any) => [s.name, s.kind, s.state]).sort()).toEqual([
      ['m1', 'manual', 'ready'],
      ['m2', 'manual', 'ready'],
      ['m3', 'manual', 'ready'],
    ]);
  });

  it('a snapshot over the size limit is aborted with no object left, and the processes run again', async () => {
    const a = await freshApi();
    const id = await a.createSandbox({ idle_timeout_s: 0 });
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(5 * MiB));
    await startCounter(stack, a, id);

    const { snapshotId, opId } = await postSnapshot(a, id, 'too-big');
    const op = await a.waitOp(opId);
    expect(op.status).toBe('failed');
    expect(op.error.code).toBe('limit_exceeded');
    expect(op.error.message).toMatch(/snapshot_bytes/);

    const snap = (await a.call('GET', `/v1/snapshots/${snapshotId}`)).body;
    expect(snap.state).toBe('failed');
    expect(snap.error.code).toBe('limit_exceeded');
    expect(snap.size_bytes).toBeNull();
    const key = (await getSnapshot(stack.db, snapshotId))!.object_key;
    expect(await stack.store.head(key)).toBeNull();
    expect(await stack.store.abortIncomplete(key)).toBe(0);

    expect(await stack.runtime.processState(id)).toBe('running');
    expect(await counterMoves(stack, id)).toBe(true);
    expect((await a.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('running');
  });

  it('a snapshot that would take the account over its byte limit fails naming account_bytes', async () => {
    const a = await freshApi();
    const id = await a.createSandbox({ idle_timeout_s: 0 });
    // 0.8 MiB of random bytes: one snapshot fits the 1 MiB snapshot limit, two pass the 1.5 MiB account limit.
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(0.8 * MiB));
    const one = await a.snapshot(id, 'one');
    expect(one.op.status).toBe('succeeded');
    // The same tree again stores no new chunk, only its manifest: the limit counts what is stored.
    const same = await a.snapshot(id, 'same');
    expect(same.op.status).toBe('succeeded');
    expect(Number((await getSnapshot(stack.db, same.snapshotId))!.stored_bytes)).toBe(0);
    // New content of the same size: within the snapshot limit, but 0.8 MiB more to store.
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(0.8 * MiB));

    const { snapshotId, opId } = await postSnapshot(a, id, 'two');
    const op = await a.waitOp(opId);
    expect(op.status).toBe('failed');
    expect(op.error.code).toBe('limit_exceeded');
    expect(op.error.message).toMatch(/account_bytes/);
    const row = (await getSnapshot(stack.db, snapshotId))!;
    expect(row.state).toBe('failed');
    expect(await stack.store.head(row.object_key)).toBeNull();
    expect(await stack.store.abortIncomplete(row.object_key)).toBe(0);
    // The first snapshot is untouched.
    expect((await a.call('GET', `/v1/snapshots/${one.snapshotId}`)).body.state).toBe('ready');
  });
});

describe('ordering, progress, cancel and retry', () => {
  let stack: TestStack;
  let api: Api;
  const faults = faultRegistry();

  /** Throttles the uploads of the sandbox it is armed on to `rate` bytes per second. */
  function throttledTo(rate: number): FaultHook {
    const uploadStart = new Map<string, number>();
    return async (point, info) => {
      if (point !== 'upload:progress' || !info.snapshotId) return;
      if (!uploadStart.has(info.snapshotId)) uploadStart.set(info.snapshotId, Date.now());
      const due = uploadStart.get(info.snapshotId)! + ((info.bytes ?? 0) / rate) * 1000;
      if (due > Date.now()) await sleep(due - Date.now());
    };
  }

  beforeAll(async () => {
    stack = await startStack({
      store: 's3',
      catalog: 'postgres',
      api: true,
      faultHook: faults.hook,
    });
    api = apiClient(stack.apiUrl!, (await stack.newAccount()).apiKey);
  });
  afterAll(async () => stack?.close());

  it('the 21st snapshot of a sandbox is refused and leaves no row', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const posted = [];
    // Reservations count at once, while their operations still wait in the sandbox's queue.
    for (let i = 1; i <= 20; i++) posted.push(await postSnapshot(api, id, `s${i}`));
    const refuse = async () => {
      const r = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 's21' });
      expect(r.status).toBe(422);
      expect(r.body.error.code).toBe('limit_exceeded');
      expect(r.body.error.details.limit).toBe('snapshots_per_sandbox');
      expect(r.body.error.details.max).toBe(20);
      expect(r.body.error.message).toMatch(/snapshots_per_sandbox/);
    };
    await refuse();
    for (const p of posted) expect((await api.waitOp(p.opId)).status).toBe('succeeded');
    await refuse();
    const rows = await listSandboxSnapshots(stack.db, id);
    expect(rows).toHaveLength(20);
    expect(rows.every((r) => r.state === 'ready')).toBe(true);
    expect(rows.map((r) => r.name)).not.toContain('s21');
    const all = await stack.db.selectFrom('snapshots').select('id').where('sandbox_id', '=', id).execute();
    expect(all).toHaveLength(20);
  });

  it('operations on one sandbox never interleave: snapshot, then restore, then pause', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const root = stack.runtime.rootDir(id);
    fs.writeFileSync(path.join(root, 'small.txt'), 'small\n');
    const base = await api.snapshot(id, 'base');
    expect(base.op.status).toBe('succeeded');
    fs.writeFileSync(path.join(root, 'big.bin'), randomBytes(6 * MiB));

    const snap = await postSnapshot(api, id, 'big');
    const restore = await api.call('POST', `/v1/snapshots/${base.snapshotId}/restore`, {});
    expect(restore.status).toBe(202);
    const paused = await api.call('POST', `/v1/sandboxes/${id}/pause`);
    expect(paused.status).toBe(202);
    const ids = [snap.opId, restore.body.operation.id as string, paused.body.operation.id as string];

    const ops = [];
    for (const o of ids) ops.push(await api.waitOp(o));
    expect(ops.map((o) => o.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);

    // The catalog records the outcome just before the child workflow closes.
    for (const o of ids) await stack.client.workflow.getHandle(o).result();
    const [s, r, p] = await Promise.all(ids.map((o) => stack.client.workflow.getHandle(o).describe()));
    for (const d of [s, r, p]) expect(d!.status.name).toBe('COMPLETED');
    expect(r!.startTime.getTime()).toBeGreaterThanOrEqual(s!.closeTime!.getTime());
    expect(p!.startTime.getTime()).toBeGreaterThanOrEqual(r!.closeTime!.getTime());

    // The snapshot read the tree before the restore replaced it, and the pause read it after.
    const big = (await getSnapshot(stack.db, snap.snapshotId))!;
    expect(Number(big.size_bytes)).toBeGreaterThan(6 * MiB);
    const auto = (await getSnapshot(stack.db, ops[2].result.snapshot_id))!;
    expect(Number(auto.size_bytes)).toBeLessThan(MiB);
    expect(fs.existsSync(path.join(root, 'big.bin'))).toBe(false);
    expect(fs.readFileSync(path.join(root, 'small.txt'), 'utf8')).toBe('small\n');
    expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('paused');
  });

  it('a running snapshot shows its upload progress', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(8 * MiB));
    faults.arm(id, throttledTo(2 * MiB));
    const { snapshotId, opId } = await postSnapshot(api, id, 'watched');
    let seen: any;
    const deadline = Date.now() + 30_000;
    while (!seen) {
      const r = await api.call('GET', `/v1/operations/${opId}`);
      expect(r.status).toBe(200);
      expect(r.body.status).toBe('running');
      if (r.body.progress.step === 'uploading' && r.body.progress.bytes_done > 0) seen = r.body;
      else if (Date.now() > deadline) throw new Error(`no upload progress seen: ${JSON.stringify(r.body)}`);
      else await sleep(100);
    }
    faults.disarm(id);
    const op = await api.waitOp(opId);
    expect(op.status).toBe('succeeded');
    const snap = (await api.call('GET', `/v1/snapshots/${snapshotId}`)).body;
    // Bytes read so far: the files are read (and the sandbox resumed) before the throttled upload ends.
    expect(seen.progress.bytes_done).toBeLessThanOrEqual(snap.size_bytes);
    expect(op.progress).toEqual({ step: 'done', bytes_done: snap.size_bytes });
  });

  it('a snapshot cancelled while it waits its turn never runs, fails its reservation and frees its name', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(8 * MiB));
    faults.arm(id, throttledTo(2 * MiB));
    const running = await postSnapshot(api, id, 'first');
    const queued = await postSnapshot(api, id, 'queued');
    expect((await api.call('GET', `/v1/snapshots/${queued.snapshotId}`)).body.state).toBe('pending');

    const c = await api.call('POST', `/v1/operations/${queued.opId}/cancel`);
    expect(c.status).toBe(202);
    // The reply is the Operation, as every other operation route returns it.
    expect(c.body.operation).toMatchObject({ id: queued.opId, type: 'create_snapshot', status: 'running', sandbox_id: id });
    const op = await api.waitOp(queued.opId, 20_000);
    expect(op.status).toBe('cancelled');
    expect(op.error).toEqual({ code: 'cancelled', message: 'cancelled before it started' });
    // It never started: no child workflow ran under its id.
    await expect(stack.client.workflow.getHandle(queued.opId).describe()).rejects.toThrow(/not found/i);
    const snap = (await api.call('GET', `/v1/snapshots/${queued.snapshotId}`)).body;
    expect(snap.state).toBe('failed');
    expect(snap.error.code).toBe('cancelled');
    expect((await api.call('GET', `/v1/operations/${running.opId}`)).body.status).toBe('running');

    // The name is free again, and the limit does not count the cancelled one.
    const again = await postSnapshot(api, id, 'queued');
    faults.disarm(id);
    expect((await api.waitOp(running.opId)).status).toBe('succeeded');
    expect((await api.waitOp(again.opId)).status).toBe('succeeded');
    const live = await listSandboxSnapshots(stack.db, id);
    expect(live.map((s) => [s.name, s.state]).sort()).toEqual([
      ['first', 'ready'],
      ['queued', 'failed'],
      ['queued', 'ready'],
    ]);
  });

  let cancelledOp: { id: string; snapshotId: string; sandboxId: string } | undefined;

  it('cancel stops a running snapshot: cancelled, snapshot failed, no object, processes running', async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(24 * MiB));
    await startCounter(stack, api, id);
    faults.arm(id, throttledTo(2 * MiB));
    const { snapshotId, opId } = await postSnapshot(api, id, 'cancel-me');
    const key = (await getSnapshot(stack.db, snapshotId))!.object_key;
    // Past the first 5 MiB part, so a multipart upload is open in S3 when the cancel arrives.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const r = await api.call('GET', `/v1/operations/${opId}`);
      expect(r.body.status).toBe('running');
      if (r.body.progress.step === 'uploading' && r.body.progress.bytes_done > 6 * MiB && (await packUploads(stack, snapshotId)).some((p) => p.open === 1)) break;
      if (Date.now() > deadline) throw new Error(`no multipart upload open past 6 MiB: ${JSON.stringify(r.body)}`);
      await sleep(100);
    }
    // The archive spools to disk: the processes run again once tar has read the tree, mid-upload.
    for (let i = 0; i < 50 && (await stack.runtime.processState(id)) !== 'running'; i++) await sleep(100);
    expect(await stack.runtime.processState(id)).toBe('running');
    const c = await api.call('POST', `/v1/operations/${opId}/cancel`);
    expect(c.status).toBe(202);
    const cancelAt = Date.now();

    const op = await api.waitOp(opId);
    expect(op.status).toBe('cancelled');
    expect(op.error.code).toBe('cancelled');
    // Cancelled mid-upload, not after the throttled upload ran to its end (12 s in, 8 s after the cancel).
    expect(Date.now() - cancelAt).toBeLessThan(5000);

    const snap = (await api.call('GET', `/v1/snapshots/${snapshotId}`)).body;
    expect(snap.state).toBe('failed');
    expect(snap.error.code).toBe('cancelled');
    expect(await stack.store.head(key)).toBeNull();
    // The pack being uploaded is gone with its multipart upload; its row says so.
    const packs = await packUploads(stack, snapshotId);
    expect(packs.length).toBeGreaterThanOrEqual(1);
    // The pack being uploaded is deleted; one already committed stays for the collector (nothing references it now).
    expect(packs.some((p) => p.state === 'deleted')).toBe(true);
    for (const p of packs) {
      expect(p.open).toBe(0);
      expect(['deleted', 'live']).toContain(p.state);
      if (p.state === 'deleted') expect(await stack.store.head(p.key)).toBeNull();
    }
    expect(await stack.db.selectFrom('snapshot_chunks').select('chunk_id').where('snapshot_id', '=', snapshotId).execute()).toEqual([]);
    expect(await stack.runtime.processState(id)).toBe('running');
    expect(await counterMoves(stack, id)).toBe(true);
    const again = await api.call('POST', `/v1/operations/${opId}/cancel`);
    expect(again.status).toBe(409);
    faults.disarm(id);
    cancelledOp = { id: opId, snapshotId, sandboxId: id };
  });

  it('retry of the cancelled snapshot runs a new operation that succeeds', async () => {
    expect(cancelledOp).toBeDefined();
    const { id: oldOp, snapshotId: oldSnap, sandboxId } = cancelledOp!;
    const r = await api.call('POST', `/v1/operations/${oldOp}/retry`);
    expect(r.status).toBe(202);
    const newOp = r.body.operation;
    expect(newOp.id).not.toBe(oldOp);
    expect(newOp.type).toBe('create_snapshot');
    expect(newOp.snapshot_id).not.toBe(oldSnap);
    const op = await api.waitOp(newOp.id);
    expect(op.status).toBe('succeeded');
    expect(op.result.snapshot_id).toBe(newOp.snapshot_id);

    const snap = (await api.call('GET', `/v1/snapshots/${newOp.snapshot_id}`)).body;
    expect(snap).toMatchObject({ name: 'cancel-me', state: 'ready', kind: 'manual', sandbox_id: sandboxId });
    const row = (await getSnapshot(stack.db, newOp.snapshot_id))!;
    expect((await stack.store.head(row.object_key))?.size).toBe(Number(row.manifest_bytes));
    expect((await getSnapshot(stack.db, oldSnap))!.state).toBe('failed');
    // The old operation keeps its outcome; a succeeded one has nothing to retry.
    expect((await api.call('GET', `/v1/operations/${oldOp}`)).body.status).toBe('cancelled');
    const twice = await api.call('POST', `/v1/operations/${newOp.id}/retry`);
    expect(twice.status).toBe(409);
    expect(await stack.runtime.processState(sandboxId)).toBe('running');
  });
});
