import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/activity';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { describeTree } from './support/tree.js';
import { getSnapshot, listSandboxSnapshots } from '../src/catalog/snapshots.js';
import { expectConsistent } from './support/verify.js';

import { faultRegistry } from './support/faults.js';
import { MiB, sleep } from './support/wait.js';

type Api = ReturnType<typeof apiClient>;

const faults = faultRegistry();

describe.each(['s3', 'fs'] as const)('commit points and limits on the %s store', (storeKind) => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startStack({
      store: storeKind,
      catalog: 'postgres',
      api: true,
      limits: { maxSnapshotsPerSandbox: 3 },
      faultHook: faults.hook,
    });
  });
  afterAll(async () => stack?.close());

  let account = '';
  const freshApi = async () => {
    const a = await stack.newAccount();
    account = a.id;
    return apiClient(stack.apiUrl!, a.apiKey);
  };
  /** The checker, as the oracle, once every operation's workflow has closed. */
  const consistent = (opIds: string[]) => expectConsistent(stack, [account], opIds);

  async function pause(api: Api, id: string) {
    const r = await api.call('POST', `/v1/sandboxes/${id}/pause`);
    expect(r.status).toBe(202);
    return api.waitOp(r.body.operation.id);
  }
  async function resume(api: Api, id: string) {
    expect((await api.call('POST', `/v1/sandboxes/${id}/resume`)).status).toBe(200);
  }
  /** Live snapshots as the limit counts them: pending or ready. */
  async function counted(id: string): Promise<number> {
    return (await listSandboxSnapshots(stack.db, id)).filter((s) => s.state === 'pending' || s.state === 'ready').length;
  }

  /** A sandbox at its limit (3): two auto snapshots (older first) and one manual, each of a different tree. */
  async function sandboxAtLimit(api: Api) {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const root = stack.runtime.rootDir(id);
    const trees: Record<string, ReturnType<typeof describeTree>> = {};
    const autos: string[] = [];
    for (const n of [1, 2]) {
      fs.writeFileSync(path.join(root, 'data.bin'), randomBytes(3 * MiB));
      fs.writeFileSync(path.join(root, 'which.txt'), `auto ${n}\n`);
      const op = await pause(api, id);
      expect(op.status).toBe('succeeded');
      autos.push(op.result.snapshot_id);
      trees[op.result.snapshot_id] = describeTree(root);
      await resume(api, id);
    }
    const m1 = await api.snapshot(id, 'm1');
    expect(m1.op.status).toBe('succeeded');
    expect(await counted(id)).toBe(3);
    return { id, root, autos, trees, manual: m1.snapshotId };
  }

  async function forkHeldAt(api: Api, snapshotId: string) {
    const g = faults.hold(snapshotId, 'restore:extracting');
    const r = await api.call('POST', '/v1/sandboxes', { from_snapshot: snapshotId });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    await g.wasReached;
    return { gate: g, opId: r.body.operation.id as string, sandboxId: r.body.sandbox.id as string };
  }

  it('a pause at the limit keeps the auto snapshot a fork is reading and replaces the next one; the limit holds throughout', async () => {
    const api = await freshApi();
    const { id, autos, trees, manual } = await sandboxAtLimit(api);
    const [oldest, younger] = autos as [string, string];
    const fork = await forkHeldAt(api, oldest);

    // Sampled while the pause runs: never more than the limit, pending ones included.
    let most = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        most = Math.max(most, await counted(id));
        await sleep(20);
      }
    })();
    const op = await pause(api, id);
    await stack.client.workflow.getHandle(op.id).result();
    sampling = false;
    await sampler;

    expect(op.status).toBe('succeeded');
    const fresh = op.result.snapshot_id as string;
    expect(op.result).toEqual({ snapshot_id: fresh, replaced: younger });
    expect(most).toBeLessThanOrEqual(3);
    expect((await getSnapshot(stack.db, younger))!.state).toBe('deleted');
    expect((await getSnapshot(stack.db, oldest))!.state).toBe('ready');
    const live = await listSandboxSnapshots(stack.db, id);
    expect(live.filter((s) => s.state !== 'deleted').map((s) => s.id).sort()).toEqual([oldest, manual, fresh].sort());
    expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('paused');

    fork.gate.open();
    faults.disarm(oldest);
    const forked = await api.waitOp(fork.opId);
    expect(forked.status).toBe('succeeded');
    expect(describeTree(stack.runtime.rootDir(fork.sandboxId))).toEqual(trees[oldest]);

    // The fresh snapshot is whole: it restores byte for byte into a new sandbox.
    const paused = describeTree(stack.runtime.rootDir(id));
    const r = await api.call('POST', '/v1/sandboxes', { from_snapshot: fresh });
    expect((await api.waitOp(r.body.operation.id)).status).toBe('succeeded');
    expect(describeTree(stack.runtime.rootDir(r.body.sandbox.id))).toEqual(paused);
    await consistent([fork.opId, r.body.operation.id]);
  });

  it('when every auto snapshot is being read, the pause still pauses and says why it took no snapshot', async () => {
    const api = await freshApi();
    const { id, autos } = await sandboxAtLimit(api);
    const forks = [];
    for (const s of autos) forks.push(await forkHeldAt(api, s));

    const op = await pause(api, id);
    expect(op.status).toBe('succeeded');
    expect(op.result.snapshot_skipped.code).toBe('limit_exceeded');
    expect(op.result.snapshot_skipped.reason).toMatch(/auto snapshots being read are kept/);
    expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('paused');
    expect(await stack.runtime.processState(id)).not.toBe('running');
    for (const s of autos) expect((await getSnapshot(stack.db, s))!.state).toBe('ready');
    expect(await counted(id)).toBe(3);

    for (const f of forks) f.gate.open();
    for (const s of autos) faults.disarm(s);
    for (const f of forks) expect((await api.waitOp(f.opId)).status).toBe('succeeded');
    await consistent([op.id, ...forks.map((f) => f.opId)]);
  });

  it('a pause at the limit keeps an auto snapshot whose export was just handed out: its download URL stays good', async () => {
    const api = await freshApi();
    const { id, autos } = await sandboxAtLimit(api);
    const [oldest, younger] = autos as [string, string];
    const ex = await api.call('POST', `/v1/snapshots/${oldest}/export`);
    expect(ex.status).toBe(202);
    const exported = await api.waitOp(ex.body.operation.id);
    expect(exported.status).toBe('succeeded');

    const op = await pause(api, id);
    await stack.client.workflow.getHandle(op.id).result();
    expect(op.result.replaced).toBe(younger);
    expect((await getSnapshot(stack.db, oldest))!.state).toBe('ready');
    const download = await fetch(exported.result.url);
    expect(download.status).toBe(200);
    expect(createHash('sha256').update(Buffer.from(await download.arrayBuffer())).digest('hex')).toBe(exported.result.sha256);
    await consistent([op.id]);
  });

  it('a pause whose snapshot fails for another reason still pauses, rolls the snapshot back and keeps the replaced one', async () => {
    const api = await freshApi();
    const { id, autos } = await sandboxAtLimit(api);
    let injected = 0;
    faults.arm(id, (point) => {
      if (point !== 'upload:progress') return;
      injected++;
      throw ApplicationFailure.create({ type: 'storage_error', message: 'AccessDenied: injected', nonRetryable: true });
    });
    const op = await pause(api, id);
    faults.disarm(id);
    expect(injected).toBe(1);
    expect(op.status).toBe('succeeded');
    expect(op.result.snapshot_skipped).toEqual({ code: 'storage_error', reason: 'AccessDenied: injected' });
    expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('paused');
    // The snapshot that was to replace the oldest auto snapshot failed, so the oldest is ready again.
    for (const s of autos) expect((await getSnapshot(stack.db, s))!.state).toBe('ready');
    const failed = (await listSandboxSnapshots(stack.db, id)).filter((s) => s.state === 'failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.error_code).toBe('storage_error');
    expect(await stack.store.head(failed[0]!.object_key)).toBeNull();
    expect(await counted(id)).toBe(3);
    await consistent([op.id]);
  });
});

describe('account byte limit under concurrency', () => {
  let stack: TestStack;
  const uploads = faultRegistry();

  beforeAll(async () => {
    stack = await startStack({
      store: 's3',
      catalog: 'postgres',
      api: true,
      limits: { maxAccountBytes: 6 * MiB, maxSnapshotBytes: 5 * MiB },
      faultHook: uploads.hook,
    });
  });
  afterAll(async () => stack?.close());

  it('two snapshots of one account that each fit but not together: one is ready, the other fails, the limit holds', async () => {
    const api = apiClient(stack.apiUrl!, (await stack.newAccount()).apiKey);
    const ids = [await api.createSandbox({ idle_timeout_s: 0 }), await api.createSandbox({ idle_timeout_s: 0 })];
    const gates = ids.map((id) => {
      // Incompressible, so each archive is about 4 MiB: one fits under 6 MiB, two do not.
      fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(4 * MiB));
      return uploads.hold(id, 'upload:progress');
    });
    const posted = [];
    for (const id of ids) {
      const r = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'both' });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      posted.push(r.body);
    }
    // Both uploads are under way before either commits: each saw the other's bytes as zero.
    await Promise.all(gates.map((g) => g.wasReached));
    for (const g of gates) g.open();
    const ops = await Promise.all(posted.map((p) => api.waitOp(p.operation.id)));
    expect(ops.map((o) => o.status).sort()).toEqual(['failed', 'succeeded']);
    const failed = ops.find((o) => o.status === 'failed')!;
    expect(failed.error.code).toBe('limit_exceeded');
    expect(failed.error.message).toMatch(/account_bytes/);
    const ready = [];
    for (const p of posted) {
      const snap = (await getSnapshot(stack.db, p.snapshot.id))!;
      if (snap.state === 'ready') ready.push(Number(snap.size_bytes));
      else expect(await stack.store.head(snap.object_key)).toBeNull();
    }
    expect(ready).toHaveLength(1);
    expect(ready[0]).toBeLessThanOrEqual(6 * MiB);
  });
});

describe('operation deadline', () => {
  let stack: TestStack;
  /** Sandboxes whose upload is throttled to 500 ms a chunk. */
  const slow = faultRegistry();

  beforeAll(async () => {
    stack = await startStack({
      store: 's3',
      catalog: 'postgres',
      api: true,
      // Two seconds and no allowance per GiB: any snapshot slower than that is cut short.
      config: { deadline: { baseSeconds: 2, secondsPerGiB: 0 } },
      faultHook: slow.hook,
    });
  });
  afterAll(async () => stack?.close());

  it('a snapshot still running at its deadline fails with deadline_exceeded, rolled back, the sandbox running', async () => {
    const api = apiClient(stack.apiUrl!, (await stack.newAccount()).apiKey);
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(16 * MiB));
    slow.arm(id, async (point) => {
      if (point === 'upload:progress') await sleep(500);
    });
    const r = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'too-slow' });
    expect(r.status).toBe(202);
    const started = Date.now();
    const op = await api.waitOp(r.body.operation.id);
    expect(op.status).toBe('failed');
    expect(op.error.code).toBe('deadline_exceeded');
    expect(op.error.message).toMatch(/deadline of 2 s/);
    // Ended by the deadline, not by the throttled upload running to its end (16 s).
    expect(Date.now() - started).toBeLessThan(12_000);
    const snap = await getSnapshot(stack.db, r.body.snapshot.id);
    expect(snap!.state).toBe('failed');
    expect(snap!.error_code).toBe('deadline_exceeded');
    expect(await stack.store.head(snap!.object_key)).toBeNull();
    expect(await stack.runtime.processState(id)).not.toBe('stopped');

    slow.disarm(id);
    // Small snapshots fit the same deadline.
    fs.rmSync(path.join(stack.runtime.rootDir(id), 'random.bin'));
    expect((await api.snapshot(id, 'quick')).op.status).toBe('succeeded');
  });
});

describe('cancel while a step is being retried', () => {
  let stack: TestStack;
  const failing = new Map<string, number>();

  beforeAll(async () => {
    stack = await startStack({
      store: 's3',
      catalog: 'postgres',
      api: true,
      faultHook: (point, info) => {
        if (point !== 'upload:progress' || !info.sandboxId || !failing.has(info.sandboxId)) return;
        failing.set(info.sandboxId, failing.get(info.sandboxId)! + 1);
        // Retryable, as a transient storage error is: the step is attempted again after a backoff.
        throw ApplicationFailure.create({ type: 'unavailable', message: 'injected transient failure', nonRetryable: false });
      },
    });
  });
  afterAll(async () => stack?.close());

  it('is recorded as cancelled, whichever attempt it interrupts', async () => {
    const api = apiClient(stack.apiUrl!, (await stack.newAccount()).apiKey);
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(2 * MiB));
    failing.set(id, 0);
    const r = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'retried' });
    expect(r.status).toBe(202);
    for (let i = 0; (failing.get(id) ?? 0) < 2; i++) {
      if (i > 300) throw new Error('the step was not retried');
      await sleep(50);
    }
    expect((await api.call('POST', `/v1/operations/${r.body.operation.id}/cancel`)).status).toBe(202);
    const op = await api.waitOp(r.body.operation.id);
    expect(failing.get(id)).toBeGreaterThanOrEqual(2);
    expect(op.status).toBe('cancelled');
    expect(op.error.code).toBe('cancelled');
    const snap = (await getSnapshot(stack.db, r.body.snapshot.id))!;
    expect(snap.state).toBe('failed');
    expect(snap.error_code).toBe('cancelled');
    expect(await stack.store.head(snap.object_key)).toBeNull();
    expect(await stack.runtime.processState(id)).not.toBe('stopped');
  });
});
