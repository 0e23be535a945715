import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { openUploads } from './support/s3.js';
import { startFaultProxy, type FaultProxy } from './support/s3-fault-proxy.js';
import { CreateMultipartUploadCommand, S3Client } from '@aws-sdk/client-s3';
import { MockActivityEnvironment } from '@temporalio/testing';
import { recordFigure } from './support/figures.js';
import { getSnapshot } from '../src/catalog/snapshots.js';
import { layout } from '../src/storage/layout.js';
import { uploadProgress, uploadSnapshot } from '../src/activities/snapshot-upload.js';
import type { RetryInfo } from '../src/storage/blob-store.js';
import { s3RequestTimeoutMs } from '../src/storage/index.js';

/**
 * Snapshots on the real stack with an S3 fault proxy between the store and moto: the faults of
 * S3-compatible servers in the field, each injected on purpose and counted, so every test proves
 * both the outcome and that the fault really happened.
 */
const RETRY_BOUND_MS = 15_000;
const BURST_MS = 4_000;

let proxy: FaultProxy;
let stack: TestStack;
let api: ReturnType<typeof apiClient>;
let accountId: string;
const quiesces = new Map<string, number>();
const retries: RetryInfo[] = [];

beforeAll(async () => {
  proxy = await startFaultProxy(inject('s3Endpoint'));
  stack = await startStack({
    store: 's3',
    s3Endpoint: proxy.endpoint,
    storageRetryMs: RETRY_BOUND_MS,
    catalog: 'postgres',
    api: true,
    onStorageRetry: (info) => retries.push(info),
  });
  // Every quiesce of a sandbox goes through the runtime: counting here counts what its processes went through.
  const quiesce = stack.runtime.quiesce.bind(stack.runtime);
  stack.runtime.quiesce = async (id: string) => {
    quiesces.set(id, (quiesces.get(id) ?? 0) + 1);
    await quiesce(id);
  };
  const acct = await stack.newAccount();
  accountId = acct.id;
  api = apiClient(stack.apiUrl!, acct.apiKey);
});
afterAll(async () => {
  await stack?.close();
  await proxy?.close();
});
beforeEach(() => {
  proxy.clear();
  retries.length = 0;
});

/** A sandbox whose archive spans three 5 MiB parts (random bytes do not compress), with a process that keeps writing. */
async function busySandbox(): Promise<string> {
  const id = await api.createSandbox();
  fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(12 * 1024 * 1024));
  await api.exec(id, ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > counter; sleep 0.05; done'], true);
  return id;
}

/** Starts a snapshot and polls its operation to the end, collecting every progress.retrying it showed. */
async function snapshotWatched(id: string, name: string) {
  const started = Date.now();
  const r = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name });
  expect(r.status).toBe(202);
  const seenRetrying: Array<{ attempt: number; error: string; next_at: string }> = [];
  for (;;) {
    const op = (await api.call('GET', `/v1/operations/${r.body.operation.id}`)).body;
    if (op.progress?.retrying) seenRetrying.push(op.progress.retrying);
    if (op.status !== 'running') {
      const key = (await getSnapshot(stack.db, r.body.snapshot.id))!.object_key;
      return { op, snapshotId: r.body.snapshot.id as string, key, seenRetrying, seconds: (Date.now() - started) / 1000 };
    }
    if (Date.now() - started > 120_000) throw new Error(`operation still running: ${JSON.stringify(op)}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** Pack keys of the account: what a snapshot's bytes are uploaded as. */
const packsOf = (account: string) => layout.packPrefix(account);

/**
 * The snapshot's packs after it ended: all live and stored whole when it succeeded; when it failed,
 * the one being uploaded deleted, any committed before kept for the collector, and nothing of the
 * snapshot referenced. No multipart upload left open either way.
 */
async function expectPacks(snapshotId: string, outcome: 'succeeded' | 'failed') {
  const packs = await stack.db.selectFrom('packs').selectAll().where('writer_snapshot_id', '=', snapshotId).execute();
  expect(packs.length).toBeGreaterThanOrEqual(1);
  if (outcome === 'failed') {
    expect(packs.some((p) => p.state === 'deleted')).toBe(true);
    expect(await stack.db.selectFrom('snapshot_chunks').select('chunk_id').where('snapshot_id', '=', snapshotId).execute()).toEqual([]);
  }
  for (const p of packs) {
    expect(await openUploads(stack, p.object_key)).toBe(0);
    expect(outcome === 'succeeded' ? ['live'] : ['live', 'deleted']).toContain(p.state);
    expect((await stack.store.head(p.object_key))?.size).toBe(p.state === 'live' ? Number(p.size_bytes) : undefined);
  }
}

async function expectRunning(id: string) {
  expect(await stack.runtime.processState(id)).toBe('running');
  const counter = () => fs.readFileSync(path.join(stack.runtime.rootDir(id), 'counter'), 'utf8');
  const before = counter();
  await new Promise((res) => setTimeout(res, 400));
  expect(counter()).not.toBe(before);
}

describe('storage faults during a snapshot (S3 through a fault proxy)', () => {
  it(`a ${BURST_MS / 1000} s burst of 503 SlowDown and a reset mid-part: the snapshot succeeds, shows progress.retrying meanwhile, and quiesces once`, async () => {
    const id = await busySandbox();
    proxy.add({ fault: 'reset', ops: ['UploadPart'], keyIncludes: packsOf(accountId), count: 1, afterBytes: 1024 * 1024 });
    proxy.add({ fault: 'slowdown', ops: ['UploadPart', 'CompleteMultipartUpload'], keyIncludes: packsOf(accountId), forMs: BURST_MS });

    const { op, snapshotId, key, seenRetrying } = await snapshotWatched(id, 'through-the-burst');
    expect(op.status).toBe('succeeded');
    expect(op.progress.retrying).toBeUndefined();
    expect(proxy.injected.reset).toBe(1);
    expect(proxy.injected.slowdown).toBeGreaterThanOrEqual(2);
    // The record said so while it retried: the store's code and when the next attempt starts.
    expect(seenRetrying.length).toBeGreaterThan(0);
    expect(seenRetrying.some((r) => /^SlowDown \(HTTP 503\)/.test(r.error))).toBe(true);
    expect(seenRetrying.every((r) => r.attempt >= 1 && !Number.isNaN(Date.parse(r.next_at)))).toBe(true);
    expect(retries.filter((r) => r.what.includes(packsOf(accountId))).length).toBeGreaterThanOrEqual(proxy.injected.slowdown);
    // The transfer was retried, not the quiesce.
    expect(quiesces.get(id)).toBe(1);
    const snap = (await api.call('GET', `/v1/snapshots/${snapshotId}`)).body;
    expect(snap.state).toBe('ready');
    expect((await stack.store.head(key))?.size).toBe(Number((await getSnapshot(stack.db, snapshotId))!.manifest_bytes));
    await expectPacks(snapshotId, 'succeeded');
    await expectRunning(id);
  });

  it('a permanent 403 AccessDenied mid-upload fails the operation as storage_error within seconds, leaving nothing behind', async () => {
    const id = await busySandbox();
    // The first part goes through; the next ones are refused, as a policy change mid-upload would.
    proxy.add({ fault: 'forbidden', ops: ['UploadPart'], keyIncludes: packsOf(accountId), skip: 1 });

    const { op, snapshotId, key, seconds } = await snapshotWatched(id, 'refused');
    expect(op.status).toBe('failed');
    expect(op.error.code).toBe('storage_error');
    expect(op.error.message).toMatch(/AccessDenied \(HTTP 403\)/);
    recordFigure('running_after_permanent_error_s', seconds, { fault: '403 AccessDenied mid-upload', op: 'create_snapshot' });
    expect(seconds).toBeLessThan(20);
    expect(proxy.injected.forbidden).toBeGreaterThanOrEqual(1);
    // Refused for good: not one retry.
    expect(retries.filter((r) => r.what.includes(packsOf(accountId)) || r.what.includes(id))).toEqual([]);
    expect(quiesces.get(id)).toBe(1);
    const snap = (await api.call('GET', `/v1/snapshots/${snapshotId}`)).body;
    expect(snap.state).toBe('failed');
    expect(snap.error.code).toBe('storage_error');
    expect(await stack.store.head(key)).toBeNull();
    await expectPacks(snapshotId, 'failed');
    await expectRunning(id);
  });

  for (const quirk of ['no-such-upload', 'not-implemented'] as const) {
    it(`ListMultipartUploads answering ${quirk === 'no-such-upload' ? '404 NoSuchUpload' : '501 NotImplemented'}: snapshots and deletes still succeed`, async () => {
      proxy.add({ fault: quirk, ops: ['ListMultipartUploads'] });
      const id = await api.createSandbox();
      fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'data.bin'), randomBytes(64 * 1024));
      const { op, snapshotId, key, seconds } = await snapshotWatched(id, `quirk-${quirk}`);
      expect(op.status).toBe('succeeded');
      expect(seconds).toBeLessThan(20);
      expect(await stack.store.head(key)).not.toBeNull();

      const del = await api.call('DELETE', `/v1/snapshots/${snapshotId}`);
      expect(del.status).toBe(202);
      const delOp = await api.waitOp(del.body.operation.id, 20_000);
      expect(delOp.status).toBe('succeeded');
      expect(await stack.store.head(key)).toBeNull();
      // Asked at the start of the upload and again by the delete, and answered with the quirk each time.
      expect(proxy.injected[quirk]).toBeGreaterThanOrEqual(2);
      expect(retries).toEqual([]);
    });
  }

  it('503s that outlast the retry bound fail the operation as storage_unavailable, rolled back', async () => {
    const id = await busySandbox();
    proxy.add({ fault: 'slowdown', ops: ['UploadPart'], keyIncludes: packsOf(accountId) });

    const { op, snapshotId, key, seconds } = await snapshotWatched(id, 'unavailable');
    expect(op.status).toBe('failed');
    expect(op.error.code).toBe('storage_unavailable');
    expect(op.error.message).toMatch(/SlowDown \(HTTP 503\)/);
    expect(seconds).toBeGreaterThanOrEqual(RETRY_BOUND_MS / 2000);
    expect(seconds).toBeLessThan(RETRY_BOUND_MS / 1000 + 30);
    expect(proxy.injected.slowdown).toBeGreaterThanOrEqual(3);
    expect(quiesces.get(id)).toBe(1);
    const snap = (await api.call('GET', `/v1/snapshots/${snapshotId}`)).body;
    expect(snap.state).toBe('failed');
    expect(snap.error.code).toBe('storage_unavailable');
    expect(await stack.store.head(key)).toBeNull();
    await expectPacks(snapshotId, 'failed');
    await expectRunning(id);
  });

  it('a server that stalls (accepts, never answers) shows progress.retrying within the budget, and the snapshot goes through once it answers', async () => {
    const id = await busySandbox();
    const timeoutMs = s3RequestTimeoutMs(RETRY_BOUND_MS);
    expect(timeoutMs).toBeLessThan(RETRY_BOUND_MS / 2);
    // Each stalled request would wait longer than the whole budget; only the request timeout ends it.
    proxy.add({ fault: 'slow', ops: ['UploadPart'], keyIncludes: packsOf(accountId), count: 2, delayMs: 2 * RETRY_BOUND_MS });

    const { op, snapshotId, seenRetrying } = await snapshotWatched(id, 'through-the-stall');
    expect(op.status).toBe('succeeded');
    expect(proxy.injected.slow).toBe(2);
    expect(seenRetrying.some((r) => /TimeoutError/.test(r.error)), JSON.stringify(seenRetrying)).toBe(true);
    expect(retries.filter((r) => r.what.startsWith('UploadPart')).length).toBe(2);
    expect((await api.call('GET', `/v1/snapshots/${snapshotId}`)).body.state).toBe('ready');
    await expectPacks(snapshotId, 'succeeded');
    await expectRunning(id);
  });

  it('a server stalled for longer than the budget fails the operation as storage_unavailable while it still stalls, rolled back', async () => {
    const id = await busySandbox();
    const timeoutMs = s3RequestTimeoutMs(RETRY_BOUND_MS);
    proxy.add({ fault: 'slow', ops: ['UploadPart'], keyIncludes: packsOf(accountId), delayMs: 4 * RETRY_BOUND_MS });

    const { op, snapshotId, seenRetrying, seconds } = await snapshotWatched(id, 'stalled-out');
    expect(op.status).toBe('failed');
    expect(op.error.code).toBe('storage_unavailable');
    expect(op.error.message).toMatch(/TimeoutError/);
    // Several attempts within the budget, each ended by the request timeout, not one that outlived it.
    expect(op.error.message).not.toMatch(/\(1 attempts?\)/);
    expect(proxy.injected.slow).toBeGreaterThanOrEqual(3);
    expect(seenRetrying.length).toBeGreaterThan(0);
    // Reported while the server still stalled (its rule never stopped matching): the budget plus one timeout.
    expect(seconds).toBeLessThan((RETRY_BOUND_MS + timeoutMs) / 1000 + 15);
    expect((await api.call('GET', `/v1/snapshots/${snapshotId}`)).body.state).toBe('failed');
    proxy.clear();
    await expectPacks(snapshotId, 'failed');
    await expectRunning(id);
  });

  it('a new attempt aborts, by the id the dead attempt heartbeat, the multipart upload it left, where uploads cannot be listed', async () => {
    const id = await api.createSandbox();
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(12 * 1024 * 1024));
    const snapshotId = `snap-heartbeat-${Date.now()}`;
    const key = `snapshots/${id}/${snapshotId}.tar.zst`;
    // What a worker killed mid-upload leaves: an open multipart upload, its id in its last heartbeat.
    const raw = new S3Client({
      endpoint: inject('s3Endpoint'),
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    const { UploadId: leftover } = await raw.send(
      new CreateMultipartUploadCommand({ Bucket: inject('s3Bucket'), Key: `${stack.config.temporal.taskQueue}/${key}` }),
    );
    raw.destroy();
    expect(await openUploads(stack, key)).toBe(1);
    proxy.add({ fault: 'not-implemented', ops: ['ListMultipartUploads'] });

    const env = new MockActivityEnvironment({ heartbeatDetails: { step: 'uploading', bytes: 6 * 1024 * 1024, uploadIds: [leftover] } });
    const beats: Array<{ uploadIds?: string[] }> = [];
    env.on('heartbeat', (d: { uploadIds?: string[] }) => beats.push({ uploadIds: d.uploadIds && [...d.uploadIds] }));
    const out: { sizeBytes: number } = await env.run(() => {
      const input = { operationId: `op-${snapshotId}`, accountId, sandboxId: id, snapshotId, objectKey: key };
      return uploadSnapshot(stack.deps, input, uploadProgress(stack.deps, input));
    });

    expect(out.sizeBytes).toBeGreaterThan(12 * 1024 * 1024);
    expect(proxy.injected['not-implemented']).toBeGreaterThanOrEqual(1);
    expect(proxy.seen.filter((r) => r.op === 'AbortMultipartUpload' && r.key.endsWith(key)).map((r) => r.status)).toEqual([204]);
    expect(await openUploads(stack, key)).toBe(0);
    // The previous attempt's id stayed in the heartbeats until it was aborted; then this attempt's own took its place.
    expect(beats[0]!.uploadIds).toEqual([leftover]);
    const last = beats.filter((b) => b.uploadIds?.length).at(-1)!.uploadIds!;
    expect(last).toHaveLength(1);
    expect(last[0]).not.toBe(leftover);
    expect((await stack.store.head(key))?.size).toBe(out.sizeBytes);
    await stack.store.delete(key);
  });
});
