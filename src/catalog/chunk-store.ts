import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { CatalogDb } from './db.js';
import type { PackRow } from './schema.js';
import { CagedError } from '../shared/errors.js';

/**
 * The chunk store's index: packs (objects of zstd frames), the chunks in them, and the chunks each
 * snapshot references. Chunk ids cross this boundary as hex (bytea comes back as Buffer from
 * PostgreSQL and as Uint8Array from PGlite; hex is the same from both).
 *
 * The rules that keep a ready snapshot's chunks from being deleted (with the collector, gc.ts):
 * - a snapshot references a stored chunk only through referenceStoredChunks, which finds it in a
 *   live pack and inserts the reference in the same statement;
 * - a new chunk becomes findable only when its pack is committed (commitPack), in the transaction
 *   that records the writing snapshot's references to it, and only while that snapshot is pending;
 * - the collector deletes a pack only after it was condemned for a grace period and, under its
 *   row lock, still has no referenced chunk.
 */

export interface ChunkLocation {
  packId: string;
  packKey: string;
  frameOffset: number;
  frameLength: number;
  frameRawLength: number;
  chunkOffset: number;
  rawLength: number;
}

export interface StoredChunk {
  id: string;
  frameOffset: number;
  frameLength: number;
  frameRawLength: number;
  chunkOffset: number;
  rawLength: number;
}

const hexArray = (ids: readonly string[]) => sql`${`{${ids.join(',')}}`}::text[]`;

/**
 * The ids asked for as a relation `w(hash)`, and (joined laterally) the chunk row of each: one
 * probe of the (account_id, hash) index per id, whatever the table's statistics say. Written as
 * `hash in (subquery)`, a fresh table's stale statistics made the planner filter every chunk of the
 * account against the list instead (200 ms for 256 ids at 5000 chunks, per batch of a restore).
 */
const wanted = (ids: readonly string[]) => sql`(select distinct decode(x, 'hex') as hash from unnest(${hexArray(ids)}) as x) as w`;
const chunkOf = (accountId: string) => sql`(select * from chunks c0 where c0.account_id = ${accountId} and c0.hash = w.hash) as c`;

/** The account's chunk key (32 bytes), made the first time it is asked for (reads, such as restores, write nothing after that). */
export async function accountChunkKey(db: CatalogDb, accountId: string): Promise<Buffer> {
  const read = async () => (await sql<{ key: string | null }>`select encode(chunk_key, 'hex') as key from accounts where id = ${accountId}`.execute(db)).rows;
  let rows = await read();
  if (rows.length && !rows[0]!.key) {
    // Two first callers at once: the condition keeps the first key, and both read it back.
    await db
      .updateTable('accounts')
      .set({ chunk_key: sql`decode(${randomBytes(32).toString('hex')}, 'hex')` })
      .where('id', '=', accountId)
      .where('chunk_key', 'is', null)
      .execute();
    rows = await read();
  }
  const key = rows[0]?.key;
  if (!key) throw new CagedError('not_found', `account ${accountId} not found`);
  return Buffer.from(key, 'hex');
}

/**
 * References, for the snapshot, every chunk of `ids` the account already stores in a live pack,
 * and returns those ids: finding and referencing are one statement, so a chunk found here is
 * referenced before any collector could see it unreferenced. The others must be stored.
 */
export async function referenceStoredChunks(db: CatalogDb, accountId: string, snapshotId: string, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const res = await sql<{ h: string }>`
    with found as (
      select c.id, c.hash from ${wanted(ids)} cross join lateral ${chunkOf(accountId)}
        join packs p on p.id = c.pack_id
      where p.state = 'live'
    ), refs as (
      insert into snapshot_chunks (snapshot_id, chunk_id) select ${snapshotId}, id from found on conflict do nothing
    )
    select encode(hash, 'hex') as h from found`.execute(db);
  return new Set(res.rows.map((r) => r.h));
}

export const newPackId = () => randomBytes(16).toString('hex');

/** A pack about to be written: its row (state writing) is the writer's lease, so the collector leaves its object alone. */
export async function insertPack(db: CatalogDb, p: { id: string; accountId: string; objectKey: string; writerSnapshotId: string | null }): Promise<void> {
  await db.insertInto('packs').values({ id: p.id, account_id: p.accountId, state: 'writing', object_key: p.objectKey, writer_snapshot_id: p.writerSnapshotId }).execute();
}

/**
 * A pack whose object is stored whole becomes live: its chunks are indexed (a chunk the account
 * already stores in a live pack keeps that location; one whose pack is condemned moves here) and,
 * for a snapshot's pack, the snapshot references all of them, in one transaction. Refused when the
 * pack's lease is gone (the collector took it) or its snapshot is no longer pending: an attempt
 * that outlived its operation must not index chunks whose object may be deleted.
 */
export async function commitPack(
  db: CatalogDb,
  c: { packId: string; accountId: string; snapshotId: string | null; sizeBytes: number; chunks: StoredChunk[] },
): Promise<void> {
  await db.transaction().execute(async (tx) => {
    const pack = await tx.selectFrom('packs').select(['state']).where('id', '=', c.packId).forUpdate().executeTakeFirst();
    if (pack?.state !== 'writing') throw new CagedError('invalid_state', `pack ${c.packId} is ${pack?.state ?? 'gone'}, not being written`);
    if (c.snapshotId) {
      const snap = await tx.selectFrom('snapshots').select('state').where('id', '=', c.snapshotId).forShare().executeTakeFirst();
      if (snap?.state !== 'pending') throw new CagedError('invalid_state', `snapshot ${c.snapshotId} is ${snap?.state ?? 'gone'}, no longer being written`);
    }
    for (let i = 0; i < c.chunks.length; i += 5000) {
      const part = c.chunks.slice(i, i + 5000);
      const col = <K extends keyof StoredChunk>(k: K) => sql`${`{${part.map((x) => x[k]).join(',')}}`}`;
      await sql`
        insert into chunks as c (account_id, hash, pack_id, frame_offset, frame_length, frame_raw_length, chunk_offset, raw_length)
        select distinct on (h) ${c.accountId}, decode(h, 'hex'), ${c.packId}, fo, fl, frl, co, rl
        from unnest(${col('id')}::text[], ${col('frameOffset')}::bigint[], ${col('frameLength')}::int[], ${col('frameRawLength')}::int[], ${col('chunkOffset')}::int[], ${col('rawLength')}::int[])
          as t(h, fo, fl, frl, co, rl)
        on conflict (account_id, hash) do update set
          pack_id = excluded.pack_id, frame_offset = excluded.frame_offset, frame_length = excluded.frame_length,
          frame_raw_length = excluded.frame_raw_length, chunk_offset = excluded.chunk_offset, raw_length = excluded.raw_length
        where not exists (select 1 from packs p where p.id = c.pack_id and p.state = 'live')`.execute(tx);
      if (c.snapshotId) {
        await sql`
          insert into snapshot_chunks (snapshot_id, chunk_id)
          select ${c.snapshotId}, c.id from ${wanted(part.map((x) => x.id))} cross join lateral ${chunkOf(c.accountId)}
          on conflict do nothing`.execute(tx);
      }
    }
    await tx
      .updateTable('packs')
      .set({ state: 'live', size_bytes: c.sizeBytes, chunk_count: c.chunks.length, updated_at: sql`now()` })
      .where('id', '=', c.packId)
      .execute();
  });
}

/** Where each chunk is (packs not yet deleted); ids the index does not know are absent from the map. */
export async function chunkLocations(db: CatalogDb, accountId: string, ids: readonly string[]): Promise<Map<string, ChunkLocation>> {
  const out = new Map<string, ChunkLocation>();
  for (let i = 0; i < ids.length; i += 5000) {
    const res = await sql<{ h: string; pack_id: string; object_key: string; frame_offset: string; frame_length: number; frame_raw_length: number; chunk_offset: number; raw_length: number }>`
      select encode(c.hash, 'hex') as h, c.pack_id, p.object_key, c.frame_offset, c.frame_length, c.frame_raw_length, c.chunk_offset, c.raw_length
      from ${wanted(ids.slice(i, i + 5000))} cross join lateral ${chunkOf(accountId)}
        join packs p on p.id = c.pack_id
      where p.state in ('live', 'condemned')`.execute(db);
    for (const r of res.rows) {
      out.set(r.h, {
        packId: r.pack_id,
        packKey: r.object_key,
        frameOffset: Number(r.frame_offset),
        frameLength: r.frame_length,
        frameRawLength: r.frame_raw_length,
        chunkOffset: r.chunk_offset,
        rawLength: r.raw_length,
      });
    }
  }
  return out;
}

/** Packs a snapshot's attempts began and never committed (a crashed or failed attempt's leftovers). */
export async function uncommittedPacksOf(db: CatalogDb, snapshotId: string): Promise<PackRow[]> {
  return db.selectFrom('packs').selectAll().where('writer_snapshot_id', '=', snapshotId).where('state', '=', 'writing').execute();
}

/** A pack whose object is gone (or never was): it can no longer be committed. */
export async function markPackDeleted(db: CatalogDb, packId: string): Promise<void> {
  await db.updateTable('packs').set({ state: 'deleted', updated_at: sql`now()` }).where('id', '=', packId).execute();
}

/** A snapshot's references go with it (a failed or deleted snapshot keeps nothing alive). */
export async function dropSnapshotRefs(db: CatalogDb, snapshotId: string): Promise<void> {
  await db.deleteFrom('snapshot_chunks').where('snapshot_id', '=', snapshotId).execute();
}

/**
 * Bytes the account stores, as the limit counts them: its packs (being written or live), the
 * manifests of its chunked snapshots and the archives of its snapshots in the earlier format.
 * With `committedFor` (the snapshot about to become ready), only what is committed counts besides
 * that snapshot's own packs: packs other pending snapshots write, and their manifests and archives,
 * count for them when they commit, so two snapshots committing side by side cannot push each other
 * over the limit (`committedOnly`: the same without a snapshot of its own, as the consistency
 * checker counts). `excludeSnapshot` leaves out everything of that snapshot.
 */
export async function accountStoredBytes(
  db: CatalogDb,
  accountId: string,
  o: { committedFor?: string; committedOnly?: boolean; excludeSnapshot?: string } = {},
): Promise<number> {
  const exclude = o.excludeSnapshot ?? null;
  const committed = o.committedOnly || o.committedFor !== undefined;
  // With committedOnly and no snapshot of its own, no pack is "its own": '' matches no id.
  const committedFor = committed ? (o.committedFor ?? '') : null;
  const states = committed ? ['ready', 'deleting'] : ['pending', 'ready', 'deleting'];
  const res = await sql<{ total: string | null }>`
    select
      coalesce((select sum(p.size_bytes) from packs p
        where p.account_id = ${accountId}
          -- a pack still being written counts for its writer while that is pending (a failed one's leftovers are the collector's)
          and (p.state = 'live' or (p.state = 'writing' and exists (select 1 from snapshots w where w.id = p.writer_snapshot_id and w.state = 'pending')))
          and (${exclude}::text is null or p.writer_snapshot_id is distinct from ${exclude}::text)
          and (${committedFor}::text is null or p.writer_snapshot_id is null or p.writer_snapshot_id = ${committedFor}::text
               or not exists (select 1 from snapshots w where w.id = p.writer_snapshot_id and w.state in ('pending', 'failed')))), 0)
      + coalesce((select sum(case when s.format = 'chunks' then coalesce(s.manifest_bytes, 0) else coalesce(s.size_bytes, 0) end)
        from snapshots s
        where s.account_id = ${accountId} and s.state in (${sql.join(states)})
          and (${exclude}::text is null or s.id <> ${exclude}::text)), 0) as total`.execute(db);
  return Number(res.rows[0]?.total ?? 0);
}

/** A chunked snapshot's accounting, recorded by the attempt that wrote it (only while it is pending). */
export async function recordChunkedSnapshot(
  db: CatalogDb,
  snapshotId: string,
  r: { storedBytes: number; manifestBytes: number; treeBytes: number; parentId: string | null },
): Promise<void> {
  await db
    .updateTable('snapshots')
    .set({ stored_bytes: r.storedBytes, manifest_bytes: r.manifestBytes, tree_bytes: r.treeBytes, parent_id: r.parentId, updated_at: sql`now()` })
    .where('id', '=', snapshotId)
    .where('state', '=', 'pending')
    .execute();
}

/**
 * The snapshot a new one of the sandbox is taken against: its newest ready chunked snapshot. After
 * a restore its files have new inodes and change times, so none of them matches and all are read
 * (their chunks still dedupe): the comparison can only save work, never take a stale file.
 */
export async function incrementalParent(db: CatalogDb, sandboxId: string, excludeSnapshot: string): Promise<{ snapshotId: string; key: string; sha256: string } | undefined> {
  const row = await db
    .selectFrom('snapshots')
    .select(['id', 'object_key', 'sha256'])
    .where('sandbox_id', '=', sandboxId)
    .where('format', '=', 'chunks')
    .where('state', '=', 'ready')
    .where('id', '!=', excludeSnapshot)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  return row?.sha256 ? { snapshotId: row.id, key: row.object_key, sha256: row.sha256 } : undefined;
}
