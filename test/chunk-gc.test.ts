import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { extractSnapshot } from './support/snapshot-tree.js';
import { sha256File } from './support/tree.js';
import { insertPack, newPackId } from '../src/catalog/chunk-store.js';
import { layout } from '../src/storage/layout.js';
import { newSnapshotId } from '../src/shared/ids.js';
import { gcPass } from './support/gc.js';
import { MiB } from './support/wait.js';

/**
 * The collector on the real stack: a deleted snapshot's packs are freed in one pass (grace 0, no
 * operation running), a pack still referenced survives even when condemned by a race, and what
 * crashed writers left (a pack row still 'writing', an object with no row) is removed. The other
 * snapshot of the sandbox restores byte for byte afterwards.
 */
describe.each(['fs', 's3'] as const)('garbage collection on the %s store', (kind) => {
  let stack: TestStack;
  let api: ReturnType<typeof apiClient>;
  let accountId: string;

  beforeAll(async () => {
    stack = await startStack({ store: kind, api: true, config: { gc: { intervalSeconds: 60, graceSeconds: 0 } } });
    const acct = await stack.newAccount();
    accountId = acct.id;
    api = apiClient(stack.apiUrl!, acct.apiKey);
  });
  afterAll(async () => stack?.close());

  const collect = () => gcPass(stack, accountId);
  const packsOf = (snapshotId: string) => stack.db.selectFrom('packs').selectAll().where('writer_snapshot_id', '=', snapshotId).execute();
  const stateOf = async (packId: string) => (await stack.db.selectFrom('packs').select('state').where('id', '=', packId).executeTakeFirstOrThrow()).state;

  it("frees a deleted snapshot's packs in one pass and keeps the packs a ready snapshot references", async () => {
    const id = await api.createSandbox();
    const root = stack.runtime.rootDir(id);
    fs.writeFileSync(path.join(root, 'a.bin'), randomBytes(5 * MiB));
    const first = await api.snapshot(id, 'first');
    expect(first.op.status).toBe('succeeded');
    // Nothing of the first tree is left (the template's files included), so its packs are referenced by it alone.
    for (const name of fs.readdirSync(root)) fs.rmSync(path.join(root, name), { recursive: true, force: true });
    fs.writeFileSync(path.join(root, 'b.bin'), randomBytes(5 * MiB));
    const second = await api.snapshot(id, 'second');
    expect(second.op.status).toBe('succeeded');
    // Packs over the repack's small-pack bound, so only the mark and the sweep act on them here.
    const freed = (await packsOf(first.snapshotId)).find((p) => Number(p.size_bytes) > 5 * MiB);
    const kept = (await packsOf(second.snapshotId)).find((p) => Number(p.size_bytes) > 5 * MiB);
    expect(freed!.state).toBe('live');
    expect(await stack.store.head(freed!.object_key)).toMatchObject({ size: Number(freed!.size_bytes) });

    const del = await api.call('DELETE', `/v1/snapshots/${first.snapshotId}`);
    expect((await api.waitOp(del.body.operation.id)).status).toBe('succeeded');
    const pass = await collect();
    expect(pass.condemned).toBeGreaterThanOrEqual(1);
    expect(pass.deleted).toBeGreaterThanOrEqual(1);
    expect(await stateOf(freed!.id)).toBe('deleted');
    expect(await stack.store.head(freed!.object_key)).toBeNull();
    expect(await stack.db.selectFrom('chunks').select('id').where('pack_id', '=', freed!.id).execute()).toEqual([]);
    expect(await stateOf(kept!.id)).toBe('live');

    // A reference the mark did not see (committed while it ran) brings a condemned pack back.
    await stack.db.updateTable('packs').set({ state: 'condemned', condemned_at: new Date(Date.now() - 60_000) }).where('id', '=', kept!.id).execute();
    const again = await collect();
    expect(again.resurrected).toBeGreaterThanOrEqual(1);
    expect(await stateOf(kept!.id)).toBe('live');
    const out = path.join(stack.dir, `gc-restored-${second.snapshotId}`);
    await extractSnapshot(stack, second.snapshotId, out);
    expect(sha256File(path.join(out, 'b.bin'))).toBe(sha256File(path.join(root, 'b.bin')));
    expect(fs.existsSync(path.join(out, 'a.bin'))).toBe(false);
  });

  it('repacks a mostly-empty pack: what is still referenced moves to a new pack, the old one is freed', async () => {
    const id = await api.createSandbox();
    const root = stack.runtime.rootDir(id);
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(root, `f${i}.txt`), randomBytes(20_000 + i));
    const first = await api.snapshot(id, 'many');
    expect(first.op.status).toBe('succeeded');
    const [old] = await packsOf(first.snapshotId);
    expect(old!.chunk_count).toBeGreaterThanOrEqual(40);
    // The next snapshot keeps 5 of the 40 files: fewer than half of the pack's chunks stay referenced.
    for (let i = 5; i < 40; i++) fs.rmSync(path.join(root, `f${i}.txt`));
    const second = await api.snapshot(id, 'few');
    expect(second.op.status).toBe('succeeded');
    // It stored nothing new: all its chunks were in the first one's pack.
    expect(await packsOf(second.snapshotId)).toEqual([]);
    const del = await api.call('DELETE', `/v1/snapshots/${first.snapshotId}`);
    expect((await api.waitOp(del.body.operation.id)).status).toBe('succeeded');

    const pass = await collect();
    expect(pass.repacked).toBeGreaterThanOrEqual(1);
    expect(pass.repackFailures).toBe(0);
    expect(await stateOf(old!.id)).toBe('deleted');
    expect(await stack.store.head(old!.object_key)).toBeNull();
    // Every chunk the remaining snapshot references is in a live pack the collector wrote.
    const where = await stack.db
      .selectFrom('snapshot_chunks as r')
      .innerJoin('chunks as c', 'c.id', 'r.chunk_id')
      .innerJoin('packs as p', 'p.id', 'c.pack_id')
      .select(['p.id', 'p.state', 'p.writer_snapshot_id'])
      .where('r.snapshot_id', '=', second.snapshotId)
      .execute();
    expect(where.length).toBeGreaterThanOrEqual(5);
    expect(new Set(where.map((w) => `${w.state}/${w.writer_snapshot_id}`))).toEqual(new Set(['live/null']));
    const out = path.join(stack.dir, `repacked-${second.snapshotId}`);
    await extractSnapshot(stack, second.snapshotId, out);
    for (let i = 0; i < 5; i++) expect(sha256File(path.join(out, `f${i}.txt`))).toBe(sha256File(path.join(root, `f${i}.txt`)));
    expect(fs.existsSync(path.join(out, 'f5.txt'))).toBe(false);
  });

  it('removes a pack a failed writer left and a pack object without a row; keeps a pending writer\'s', async () => {
    const id = await api.createSandbox();
    const leftover = async (writerState: 'failed' | 'pending') => {
      const snapshotId = newSnapshotId();
      await stack.db
        .insertInto('snapshots')
        .values({ id: snapshotId, account_id: accountId, sandbox_id: id, name: `w-${snapshotId}`, kind: 'manual', state: writerState, object_key: layout.manifest(id, snapshotId), format: 'chunks' })
        .execute();
      const packId = newPackId();
      const key = layout.pack(accountId, packId);
      await insertPack(stack.db, { id: packId, accountId, objectKey: key, writerSnapshotId: snapshotId });
      await stack.store.put(key, Readable.from([randomBytes(1000)]));
      return { packId, key };
    };
    const failed = await leftover('failed');
    const pending = await leftover('pending');
    const orphanKey = layout.pack(accountId, newPackId());
    await stack.store.put(orphanKey, Readable.from([randomBytes(1000)]));

    const pass = await collect();
    expect(pass.staleWritesRemoved).toBeGreaterThanOrEqual(1);
    expect(pass.orphansRemoved).toBeGreaterThanOrEqual(1);
    expect(await stateOf(failed.packId)).toBe('deleted');
    expect(await stack.store.head(failed.key)).toBeNull();
    expect(await stack.store.head(orphanKey)).toBeNull();
    // A writer still pending holds its lease.
    expect(await stateOf(pending.packId)).toBe('writing');
    expect(await stack.store.head(pending.key)).toMatchObject({ size: 1000 });
    await stack.db.updateTable('snapshots').set({ state: 'failed' }).where('id', '=', (await stack.db.selectFrom('packs').select('writer_snapshot_id').where('id', '=', pending.packId).executeTakeFirstOrThrow()).writer_snapshot_id!).execute();
  });
});
