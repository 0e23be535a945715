import fs from 'node:fs';
import { Readable } from 'node:stream';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CreateMultipartUploadCommand, S3Client } from '@aws-sdk/client-s3';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { verifyTestStack } from './support/verify.js';
import type { Finding, VerifyOptions } from '../src/service/verify/index.js';
import { getSnapshot } from '../src/catalog/snapshots.js';
import { layout } from '../src/storage/layout.js';
import { getOperation, insertOperation } from '../src/catalog/operations.js';
import { insertSandbox } from '../src/catalog/sandboxes.js';
import { newOperationId, newSandboxId, newSnapshotId } from '../src/shared/ids.js';
import { faultRegistry } from './support/faults.js';
import { MiB } from './support/wait.js';

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** The (check, subject) pairs of a run, which is what each injection must produce exactly. */
const pairs = (found: Finding[]) => found.map((f) => [f.check, f.subject]);

const faults = faultRegistry();

describe.each(['fs', 's3'] as const)('caged verify on the %s store', (storeKind) => {
  let stack: TestStack;
  let api: ReturnType<typeof apiClient>;
  let accountId: string;
  let sandbox: string;
  let snapshotId: string;
  let objectKey: string;
  /** This file's accounts only: the PostgreSQL catalog is shared with the other test files. */
  const verify = (o: Omit<VerifyOptions, 'accountIds'> = {}) => verifyTestStack(stack, [accountId], o);

  beforeAll(async () => {
    // Small limits, so direct rows can exceed them cheaply.
    stack = await startStack({
      store: storeKind,
      catalog: 'postgres',
      api: true,
      limits: { maxSnapshotsPerSandbox: 5, maxAccountBytes: 64 * MiB },
      faultHook: faults.hook,
    });
    const acct = await stack.newAccount(`verify-${storeKind}`);
    accountId = acct.id;
    api = apiClient(stack.apiUrl!, acct.apiKey);
  });
  afterAll(async () => stack?.close());

  it('a stack after snapshot, restore and export has no findings, deep or not', { timeout: 120_000 }, async () => {
    sandbox = await api.createSandbox({ idle_timeout_s: 0 });
    await api.exec(sandbox, ['sh', '-c', 'head -c 300000 /dev/urandom > data.bin; echo hi > note.txt']);
    // A process, so that the sandbox has a process group to stop later.
    await api.exec(sandbox, ['sleep', '1000'], true);
    const snap = await api.snapshot(sandbox, 'base');
    expect(snap.op.status).toBe('succeeded');
    snapshotId = snap.snapshotId;
    objectKey = (await getSnapshot(stack.db, snapshotId))!.object_key;
    const restore = await api.call('POST', `/v1/snapshots/${snapshotId}/restore`, {});
    expect((await api.waitOp(restore.body.operation.id)).status).toBe('succeeded');
    const exp = await api.call('POST', `/v1/snapshots/${snapshotId}/export`, {});
    expect((await api.waitOp(exp.body.operation.id)).status).toBe('succeeded');
    expect(await stack.store.head(layout.export(sandbox, snapshotId))).not.toBeNull();

    expect(await verify()).toEqual([]);
    expect(await verify({ deep: true })).toEqual([]);
  });

  it("a deleted object is snapshot_object_missing; a truncated one snapshot_object_size; altered bytes snapshot_object_sha256 with --deep only", async () => {
    const original = await readAll(await stack.store.get(objectKey));
    try {
      await stack.store.delete(objectKey);
      const missing = await verify({ repair: true });
      expect(pairs(missing)).toEqual([['snapshot_object_missing', snapshotId]]);
      // Data that is gone cannot be repaired, only reported.
      expect(missing[0]).toMatchObject({ repairable: false });
      expect(missing[0]!.repaired).toBeUndefined();

      await stack.store.put(objectKey, Readable.from([original.subarray(0, original.length - 100)]));
      expect(pairs(await verify())).toEqual([['snapshot_object_size', snapshotId]]);

      const altered = Buffer.from(original);
      altered[altered.length >> 1] = altered[altered.length >> 1]! ^ 0xff;
      await stack.store.put(objectKey, Readable.from([altered]));
      expect(await verify()).toEqual([]);
      expect(pairs(await verify({ deep: true }))).toEqual([['snapshot_object_sha256', snapshotId]]);
    } finally {
      await stack.store.put(objectKey, Readable.from([original]));
    }
    expect(await verify({ deep: true })).toEqual([]);
  });

  it("the chunk store: a pack gone from the store is pack_object_missing, a shorter one pack_object_size, altered bytes pack_chunk_damaged with --deep only, a reference to an unindexed chunk snapshot_chunk_missing", async () => {
    const pack = await stack.db
      .selectFrom('snapshot_chunks as r')
      .innerJoin('chunks as c', 'c.id', 'r.chunk_id')
      .innerJoin('packs as p', 'p.id', 'c.pack_id')
      .select(['p.id', 'p.object_key'])
      .where('r.snapshot_id', '=', snapshotId)
      .executeTakeFirstOrThrow();
    const original = await readAll(await stack.store.get(pack.object_key));
    try {
      await stack.store.delete(pack.object_key);
      const missing = await verify({ repair: true });
      expect(pairs(missing)).toEqual([['pack_object_missing', pack.id]]);
      expect(missing[0]).toMatchObject({ repairable: false });

      await stack.store.put(pack.object_key, Readable.from([original.subarray(0, original.length - 100)]));
      expect(pairs(await verify())).toEqual([['pack_object_size', pack.id]]);

      // One byte inside the first frame: same size, so only reading the chunks finds it.
      const altered = Buffer.from(original);
      altered[40] = altered[40]! ^ 0xff;
      await stack.store.put(pack.object_key, Readable.from([altered]));
      expect(await verify()).toEqual([]);
      const deep = await verify({ deep: true });
      expect(pairs(deep)).toEqual([['pack_chunk_damaged', pack.id]]);
      expect(deep[0]!.detail).toMatch(/indexed chunks are damaged/);
    } finally {
      await stack.store.put(pack.object_key, Readable.from([original]));
    }
    expect(await verify({ deep: true })).toEqual([]);

    // The index lost the pack (as a collector bug would): the snapshot is named.
    await stack.db.updateTable('packs').set({ state: 'deleted' }).where('id', '=', pack.id).execute();
    try {
      expect(pairs(await verify())).toEqual([['snapshot_chunk_missing', snapshotId]]);
    } finally {
      await stack.db.updateTable('packs').set({ state: 'live' }).where('id', '=', pack.id).execute();
    }
    expect(await verify()).toEqual([]);
  });

  it('an object no live row owns is orphan_object past the grace period; --repair deletes it', async () => {
    // Each family, in the current layout and in the one of earlier versions.
    const keys = [
      layout.archive(sandbox, newSnapshotId()),
      layout.manifest(sandbox, newSnapshotId()),
      layout.exportChecksum(sandbox, newSnapshotId()),
      layout.importUpload(sandbox, newSnapshotId(), 'abc123'),
      `exports/${newSnapshotId()}.tar.gz.sha256`,
      `imports/${newSnapshotId()}-abc123.tar.gz`,
    ];
    for (const key of keys) await stack.store.put(key, Readable.from([Buffer.from('orphan')]));
    // Young objects may belong to work in flight.
    expect(await verify({ graceSeconds: 900 })).toEqual([]);
    const found = await verify();
    expect(pairs(found).sort()).toEqual(keys.map((k) => ['orphan_object', k]).sort());
    expect(found.every((f) => f.repairable)).toBe(true);

    const repaired = await verify({ repair: true });
    expect(repaired.map((f) => f.repaired)).toEqual(keys.map(() => true));
    for (const key of keys) expect(await stack.store.head(key)).toBeNull();
    expect(await verify()).toEqual([]);
  });

  it('an object outside every key family is unknown_object, reported and never deleted', async () => {
    await stack.store.put('stray/file.bin', Readable.from([Buffer.from('not ours')]));
    const found = await verify({ repair: true });
    expect(pairs(found)).toEqual([['unknown_object', 'stray/file.bin']]);
    expect(found[0]).toMatchObject({ repairable: false });
    expect(await stack.store.head('stray/file.bin')).not.toBeNull();
    await stack.store.delete('stray/file.bin');
    expect(await verify()).toEqual([]);
  });

  it('an unfinished upload of no live snapshot is orphan_upload; --repair aborts it', async (t) => {
    // The store lists unfinished uploads only when it implements listIncomplete.
    if (!stack.store.listIncomplete) return t.skip();
    const key = `snapshots/${sandbox}/${newSnapshotId()}.tar.zst`;
    if (storeKind === 's3') {
      const s3 = new S3Client({ endpoint: inject('s3Endpoint'), region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
      await s3.send(new CreateMultipartUploadCommand({ Bucket: inject('s3Bucket'), Key: `${stack.config.temporal.taskQueue}/${key}` }));
      s3.destroy();
    } else {
      // What a crashed writer leaves: a staged temp file that was never published. (Made beside a
      // real staged file and named like it; the real one is discarded, so no descriptor stays open.)
      const staged = await stack.store.local!.stage(key);
      fs.writeFileSync(staged.path.replace(/-[0-9a-f]+$/, '-0123456789ab'), 'half an archive');
      await staged.discard();
    }
    const found = await verify();
    expect(pairs(found)).toEqual([['orphan_upload', key]]);
    const repaired = await verify({ repair: true });
    expect(repaired[0]).toMatchObject({ check: 'orphan_upload', repaired: true });
    expect(await verify()).toEqual([]);
  });

  it('catalog and runtime injections each give exactly their finding, and --repair fixes the repairable ones', { timeout: 60_000 }, async () => {
    if (storeKind === 's3') return; // catalog, Temporal and the runtime do not depend on the store
    const old = sql<Date>`now() - interval '1 minute'`;

    // A pending snapshot that no operation writes.
    const pendingId = newSnapshotId();
    await stack.db
      .insertInto('snapshots')
      .values({ id: pendingId, account_id: accountId, sandbox_id: sandbox, name: 'stuck', kind: 'manual', state: 'pending', object_key: `snapshots/${sandbox}/${pendingId}.tar.zst`, updated_at: old })
      .execute();
    expect(pairs(await verify())).toEqual([['pending_snapshot_without_operation', pendingId]]);
    // Within the grace period it may still be an import being received.
    expect(await verify({ graceSeconds: 900 })).toEqual([]);

    // A running operation whose workflow never existed, on a sandbox whose workflow does not run either.
    const ghost = await insertSandbox(stack.db, { id: newSandboxId(), accountId, template: 'base', cpu: 1, memoryMb: 512, hostId: 'elsewhere', idleTimeoutSeconds: 0, state: 'paused' });
    const opId = newOperationId('restore');
    await insertOperation(stack.db, { id: opId, accountId, type: 'restore', sandboxId: ghost.id, input: {} });
    await stack.db.updateTable('operations').set({ updated_at: old }).where('id', '=', opId).execute();

    // A sandbox recorded running whose processes are stopped, with no operation on it.
    await stack.runtime.pause(sandbox);
    expect(await stack.runtime.processState(sandbox)).toBe('stopped');

    const found = await verify();
    expect(pairs(found)).toEqual([
      ['operation_without_workflow', opId],
      ['pending_snapshot_without_operation', pendingId],
      ['sandbox_processes_stopped', sandbox],
    ]);
    expect(found.every((f) => f.repairable)).toBe(true);

    const repaired = await verify({ repair: true });
    expect(repaired.map((f) => [f.check, f.repaired])).toEqual([
      ['operation_without_workflow', true],
      ['pending_snapshot_without_operation', true],
      ['sandbox_processes_stopped', true],
    ]);
    expect((await getOperation(stack.db, opId))!.status).toBe('failed');
    expect((await getSnapshot(stack.db, pendingId))!.state).toBe('failed');
    expect(await stack.runtime.processState(sandbox)).toBe('running');
    expect(await verify()).toEqual([]);
  });

  it('an operation whose workflow an operator terminated: found, reconciled, and what it left is cleaned up', { timeout: 90_000 }, async () => {
    if (storeKind === 's3') return;
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    let release!: () => void;
    // The snapshot's upload waits at its first chunk until released, then fails.
    const gate = { entered: false, left: false, release: new Promise<void>((r) => (release = r)) };
    faults.arm(id, async (point) => {
      if (point !== 'upload:progress' || gate.left) return;
      gate.entered = true;
      await gate.release;
      gate.left = true;
      throw new Error('injected fault: upload abandoned');
    });
    const posted = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'doomed' });
    const opId = posted.body.operation.id as string;
    const snapId = posted.body.snapshot.id as string;
    for (let i = 0; !gate.entered; i++) {
      if (i > 600) throw new Error('the upload never started');
      await new Promise((r) => setTimeout(r, 50));
    }
    await stack.client.workflow.getHandle(opId).terminate('verify test');
    release();
    for (let i = 0; !gate.left; i++) {
      if (i > 600) throw new Error('the upload never ended');
      await new Promise((r) => setTimeout(r, 50));
    }
    // The terminated workflow recorded nothing: its row still says running, its snapshot pending.
    expect((await getOperation(stack.db, opId))!.status).toBe('running');
    // Younger than reconciliation's own 5 s guard: backdated, as an operator would find it later.
    await stack.db.updateTable('operations').set({ updated_at: sql`now() - interval '1 minute'` }).where('id', '=', opId).execute();
    const found = await verify();
    expect(pairs(found)).toEqual([['operation_without_workflow', opId]]);
    expect(found[0]!.detail).toContain('terminated');

    const repaired = await verify({ repair: true });
    expect(pairs(repaired)).toContainEqual(['operation_without_workflow', opId]);
    expect(pairs(repaired)).toContainEqual(['pending_snapshot_without_operation', snapId]);
    expect(repaired.every((f) => f.repaired === true)).toBe(true);
    expect((await getOperation(stack.db, opId))!.status).toBe('failed');
    expect((await getSnapshot(stack.db, snapId))!.state).toBe('failed');
    // Its partial object, if the upload got that far, was an orphan of the failed row and is gone.
    expect(await verify()).toEqual([]);
    expect(await stack.runtime.processState(id)).not.toBe('stopped');
  });

  it('limits exceeded through direct rows are reported per sandbox and per account, never repaired', async () => {
    if (storeKind === 's3') return;
    const other = await insertSandbox(stack.db, { id: newSandboxId(), accountId, template: 'base', cpu: 1, memoryMb: 512, hostId: 'elsewhere', idleTimeoutSeconds: 0, state: 'paused' });
    const ids = Array.from({ length: 6 }, () => newSnapshotId());
    // Ready rows with whole objects, so only the limits are wrong: 6 of 5 snapshots, 72 of 64 MiB.
    for (const [i, id] of ids.entries()) {
      const key = `snapshots/${other.id}/${id}.tar.zst`;
      await stack.store.put(key, Readable.from([Buffer.alloc(12 * MiB)]));
      await stack.db
        .insertInto('snapshots')
        .values({ id, account_id: accountId, sandbox_id: other.id, name: `over-${i}`, kind: 'manual', state: 'ready', object_key: key, size_bytes: 12 * MiB })
        .execute();
    }
    const found = await verify({ repair: true });
    expect(pairs(found)).toEqual([
      ['snapshots_per_sandbox_exceeded', other.id],
      ['account_bytes_exceeded', accountId],
    ]);
    expect(found.every((f) => !f.repairable && f.repaired === undefined)).toBe(true);
    await stack.db.updateTable('snapshots').set({ state: 'deleted' }).where('id', 'in', ids).execute();
    for (const id of ids) await stack.store.delete(`snapshots/${other.id}/${id}.tar.zst`);
    expect(await verify()).toEqual([]);
  });

  it('a snapshot left deleting after its clean-up failed is found, and the repair finishes the deletion', async () => {
    const id = newSnapshotId();
    const sandbox = await insertSandbox(stack.db, { id: newSandboxId(), accountId, template: 'base', cpu: 1, memoryMb: 512, hostId: 'elsewhere', idleTimeoutSeconds: 0, state: 'paused' });
    const key = `snapshots/${sandbox.id}/${id}.tar.zst`;
    await stack.store.put(key, Readable.from([Buffer.from('replaced auto snapshot')]));
    await stack.db
      .insertInto('snapshots')
      .values({ id, account_id: accountId, sandbox_id: sandbox.id, name: 'auto-replaced', kind: 'auto', state: 'deleting', object_key: key, size_bytes: 22 })
      .execute();
    const found = await verify();
    expect(pairs(found)).toEqual([['snapshot_deletion_unfinished', id]]);
    expect(found[0]!.repairable).toBe(true);
    const repaired = await verify({ repair: true });
    expect(repaired.map((f) => [f.check, f.subject, f.repaired])).toEqual([['snapshot_deletion_unfinished', id, true]]);
    expect((await getSnapshot(stack.db, id))!.state).toBe('deleted');
    expect(await stack.store.head(key)).toBeNull();
    expect(await verify()).toEqual([]);
  });
});
