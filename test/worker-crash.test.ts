import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openUploads, packUploads } from './support/s3.js';
import { finalAttempt } from './support/history.js';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { sha256File } from './support/tree.js';
import { extractSnapshot, fileBytes } from './support/snapshot-tree.js';
import { getSnapshot } from '../src/catalog/snapshots.js';
import { killAllChildren, killChild, startWorkerProcess } from './support/processes.js';
import { MiB, sleep } from './support/wait.js';

let stack: TestStack;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  stack = await startStack({ store: 's3', catalog: 'postgres', api: true, workers: false });
  api = apiClient(stack.apiUrl!, (await stack.newAccount()).apiKey);
});

afterAll(async () => {
  await killAllChildren();
  await stack?.close();
});

async function counterMoves(id: string): Promise<boolean> {
  const file = path.join(stack.runtime.rootDir(id), 'counter');
  const before = fs.readFileSync(file, 'utf8');
  await sleep(400);
  return fs.readFileSync(file, 'utf8') !== before;
}

describe('a worker killed mid-snapshot', () => {
  it('the upload is retried on a new worker: snapshot ready, no orphaned upload, processes running', { timeout: 120_000 }, async () => {
    // The hook runs per chunk the upload reads from its spool file (1 MiB): ~10 s for the archive.
    const first = await startWorkerProcess(stack, 'crash-first', { env: { CAGED_TEST_SLOW_UPLOAD_MS: '400' } });
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const root = stack.runtime.rootDir(id);
    fs.writeFileSync(path.join(root, 'random.bin'), randomBytes(24 * MiB));
    await api.exec(id, ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > counter; sleep 0.05; done'], true);
    for (let i = 0; !fs.existsSync(path.join(root, 'counter')); i++) {
      if (i > 100) throw new Error('the counter did not start');
      await sleep(50);
    }

    const posted = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'survivor' });
    expect(posted.status).toBe(202);
    const opId = posted.body.operation.id as string;
    const snapshotId = posted.body.snapshot.id as string;
    const key = (await getSnapshot(stack.db, snapshotId))!.object_key;

    // Mid-upload: progress is visible and a multipart upload with a part in it is open in S3.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await api.call('GET', `/v1/operations/${opId}`);
      expect(r.body.status).toBe('running');
      if (r.body.progress.step === 'uploading' && (await packUploads(stack, snapshotId)).some((p) => p.open === 1)) break;
      if (Date.now() > deadline) throw new Error(`the upload did not get going: ${JSON.stringify(r.body)}`);
      await sleep(100);
    }
    await killChild(first, 'SIGKILL');
    expect(first.signalCode).toBe('SIGKILL');
    // The dead worker left its upload open. The sandbox had already been resumed once tar had read
    // the tree: with S3 the archive spools to disk, so the processes do not wait for the upload.
    for (let i = 0; i < 50 && (await stack.runtime.processState(id)) !== 'running'; i++) await sleep(100);
    expect(await stack.runtime.processState(id)).toBe('running');
    const leftBehind = (await packUploads(stack, snapshotId)).filter((p) => p.open === 1);
    expect(leftBehind).toHaveLength(1);
    expect((await api.call('GET', `/v1/operations/${opId}`)).body.status).toBe('running');

    await startWorkerProcess(stack, 'crash-second');
    const op = await api.waitOp(opId, 100_000);
    expect(op.status, JSON.stringify(op.error)).toBe('succeeded');

    // The snapshot's host step really was retried: its second attempt is the one that completed.
    await stack.client.workflow.getHandle(opId).result();
    expect(await finalAttempt(stack.client, opId, 'snapshotSandbox')).toBeGreaterThanOrEqual(2);

    const snap = (await api.call('GET', `/v1/snapshots/${snapshotId}`)).body;
    expect(snap.state).toBe('ready');
    expect(op.result).toEqual({ snapshot_id: snapshotId, size_bytes: snap.size_bytes, sha256: snap.sha256 });
    const out = path.join(stack.dir, `extract-${snapshotId}`);
    await extractSnapshot(stack, snapshotId, out);
    expect(snap.size_bytes).toBe(fileBytes(out));
    expect(sha256File(path.join(out, 'random.bin'))).toBe(sha256File(path.join(root, 'random.bin')));

    // Nothing orphaned: the dead attempt's pack is aborted and deleted, the new attempt's is live;
    // no multipart upload is open, and the only object of the sandbox is its manifest.
    const packs = await packUploads(stack, snapshotId);
    expect(packs.find((p) => p.key === leftBehind[0]!.key)).toMatchObject({ state: 'deleted', open: 0 });
    expect(await stack.store.head(leftBehind[0]!.key)).toBeNull();
    // The packs both attempts committed stay (the second references what the first stored); none is left half-written.
    expect(packs.every((p) => p.open === 0 && (p.state === 'live' || p.state === 'deleted'))).toBe(true);
    for (const p of packs.filter((x) => x.state === 'live')) expect((await stack.store.head(p.key))?.size).toBe(p.sizeBytes);
    expect(await openUploads(stack, key)).toBe(0);
    const objects: string[] = [];
    for await (const o of stack.store.list('snapshots/')) if (o.key.startsWith(`snapshots/${id}/`)) objects.push(o.key);
    expect(objects).toEqual([key]);

    expect(await stack.runtime.processState(id)).toBe('running');
    expect(await counterMoves(id)).toBe(true);
    expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('running');
  });
});
