import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/activity';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { describeTree, populateTree, sha256File } from './support/tree.js';
import { extractSnapshot, fileBytes } from './support/snapshot-tree.js';
import { faultRegistry } from './support/faults.js';
import { getSnapshot } from '../src/catalog/snapshots.js';

const faults = faultRegistry();
let stack: TestStack;
let api: ReturnType<typeof apiClient>;

describe.each([
  ['s3 (moto)', 's3', 'moto'],
  ['s3 (s3rver)', 's3', 's3rver'],
  ['fs', 'fs', undefined],
] as const)('on the %s store', (_name, storeKind, s3Server) => {
  beforeAll(async () => {
    stack = await startStack({
      store: storeKind,
      s3Server,
      catalog: 'postgres',
      api: true,
      faultHook: faults.hook,
    });
    const acct = await stack.newAccount();
    api = apiClient(stack.apiUrl!, acct.apiKey);
  });
  afterAll(async () => stack?.close());

  async function download(key: string, file: string) {
    await pipeline(await stack.store.get(key), fs.createWriteStream(file));
  }

  async function counter(sandboxId: string): Promise<string> {
    return fs.readFileSync(path.join(stack.runtime.rootDir(sandboxId), 'counter'), 'utf8');
  }

  describe('createSnapshot and deleteSnapshot on Temporal and PostgreSQL', () => {
    it('reaches ready with its size and manifest sha256, and the tree rebuilt from the store equals the sandbox', async () => {
      const id = await api.createSandbox();
      populateTree(stack.runtime.rootDir(id));
      const { op, snapshotId } = await api.snapshot(id, 'golden');
      expect(op.status).toBe('succeeded');

      const snap = (await api.call('GET', `/v1/snapshots/${snapshotId}`)).body;
      expect(snap.state).toBe('ready');
      expect(snap.kind).toBe('manual');
      const row = (await getSnapshot(stack.db, snapshotId))!;
      expect(row.format).toBe('chunks');
      expect(row.object_key).toBe(`snapshots/${id}/${snapshotId}/manifest.ndjson.zst`);
      // Its size is what the files hold; its sha256 is the manifest's.
      expect(snap.size_bytes).toBe(fileBytes(stack.runtime.rootDir(id)));
      const file = path.join(stack.dir, `${snapshotId}.manifest`);
      await download(row.object_key, file);
      expect(snap.sha256).toBe(sha256File(file));
      expect(Number(row.manifest_bytes)).toBe(fs.statSync(file).size);
      expect(op.result).toEqual({ snapshot_id: snapshotId, size_bytes: snap.size_bytes, sha256: snap.sha256 });

      const out = path.join(stack.dir, `extract-${snapshotId}`);
      await extractSnapshot(stack, snapshotId, out);
      const expected = describeTree(stack.runtime.rootDir(id));
      expect(describeTree(out)).toEqual(expected);
      // The cases that matter are really in the comparison.
      expect(expected).toContainEqual({ path: 'empty-dir', type: 'dir', mode: 0o755 });
      expect(expected).toContainEqual({ path: 'link-to-main', type: 'symlink', mode: 0, target: 'proj/src/main.py' });
      expect(expected.find((e) => e.path === 'proj/secret.txt')?.mode).toBe(0o600);
      expect(expected.find((e) => e.path === 'proj/src/main.py')?.mode).toBe(0o755);
    });

    it('delete marks the snapshot deleted and removes its object', async () => {
      const id = await api.createSandbox();
      const { snapshotId } = await api.snapshot(id, 'to-delete');
      const key = (await getSnapshot(stack.db, snapshotId))!.object_key;
      expect(await stack.store.head(key)).not.toBeNull();

      const del = await api.call('DELETE', `/v1/snapshots/${snapshotId}`);
      expect(del.status).toBe(202);
      const op = await api.waitOp(del.body.operation.id);
      expect(op.status).toBe('succeeded');
      expect(await stack.store.head(key)).toBeNull();
      expect((await getSnapshot(stack.db, snapshotId))!.state).toBe('deleted');
      expect((await api.call('GET', `/v1/snapshots/${snapshotId}`)).status).toBe(404);
      // The name is free again once its snapshot is gone.
      expect((await api.snapshot(id, 'to-delete')).op.status).toBe('succeeded');
    });

    // On S3 too: tar writes a spool file, so a held upload does not hold tar back.
    it('the processes run again once the tree is read, while the archive is still being stored', async () => {
      const id = await api.createSandbox();
      fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(4 * 1024 * 1024));
      await api.exec(id, ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > counter; sleep 0.05; done'], true);
      // The upload waits, at its first chunk, until the processes run again; it records what it saw.
      const held: { sawRunning?: boolean; snapshotState?: string } = {};
      faults.arm(id, async (point, info) => {
        if (point !== 'upload:progress' || held.sawRunning !== undefined) return;
        held.sawRunning = false;
        for (let i = 0; i < 200 && !held.sawRunning; i++) {
          held.sawRunning = (await stack.runtime.processState(info.sandboxId!)) === 'running';
          if (!held.sawRunning) await new Promise((r) => setTimeout(r, 50));
        }
        held.snapshotState = (await getSnapshot(stack.db, info.snapshotId!))?.state;
      });

      const { op, snapshotId } = await api.snapshot(id, 'early-resume');
      expect(op.status).toBe('succeeded');
      // The upload's first chunk waited until the processes ran: they were resumed before the snapshot was stored.
      expect(held).toEqual({ sawRunning: true, snapshotState: 'pending' });
      expect((await api.call('GET', `/v1/snapshots/${snapshotId}`)).body.state).toBe('ready');
      expect(await stack.runtime.processState(id)).toBe('running');
      faults.disarm(id);
    });

    it('a failure injected mid-upload leaves no object, a failed snapshot, and the processes running', async () => {
      const id = await api.createSandbox();
      // Random bytes do not compress, so the archive is larger than one 5 MiB part.
      fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(12 * 1024 * 1024));
      await api.exec(id, ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > counter; sleep 0.05; done'], true);
      faults.arm(id, (point, info) => {
        // Fails once the first multipart part is in S3, so the rollback must remove a real partial upload.
        if (point === 'upload:progress' && (info.bytes ?? 0) > 6 * 1024 * 1024) {
          throw ApplicationFailure.create({ type: 'injected_fault', message: 'injected fault: upload:progress', nonRetryable: true });
        }
      });

      const r = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'doomed' });
      expect(r.status).toBe(202);
      const op = await api.waitOp(r.body.operation.id);
      expect(op.status).toBe('failed');
      expect(op.error).toEqual({ code: 'injected_fault', message: 'injected fault: upload:progress' });

      const snap = (await api.call('GET', `/v1/snapshots/${r.body.snapshot.id}`)).body;
      expect(snap.state).toBe('failed');
      expect(snap.error.code).toBe('injected_fault');
      const key = (await getSnapshot(stack.db, r.body.snapshot.id))!.object_key;
      expect(await stack.store.head(key)).toBeNull();
      expect(await stack.store.abortIncomplete(key)).toBe(0);

      expect(await stack.runtime.processState(id)).toBe('running');
      const before = await counter(id);
      await new Promise((res) => setTimeout(res, 400));
      expect(await counter(id)).not.toBe(before);
      faults.disarm(id);
    });
  });
});
