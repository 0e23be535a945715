import { sql, type SqlBool } from 'kysely';
import type { CatalogDb } from './db.js';
import type { PackRow } from './schema.js';

/** The accounts a pass looks at; all when absent (tests that share one database scope their own). */
export interface GcScope {
  accountIds?: string[];
}

/** `col in (accounts)`, or true for an unscoped pass. */
const inScope = (col: string, scope: GcScope) => (scope.accountIds ? sql<SqlBool>`${sql.ref(col)} in (${sql.join(scope.accountIds)})` : sql<SqlBool>`true`);

/** How long ago `graceSeconds` was, as SQL. */
const graceAgo = (graceSeconds: number) => sql<Date>`now() - make_interval(secs => ${graceSeconds})`;

/**
 * The collector's catalog side (mark and sweep over the chunk index, see chunk-store.ts for the
 * rules it keeps with the writers). No lock is held across steps and none blocks a snapshot: each
 * step is one statement, or one short transaction on one pack's row.
 */

/** References a failed or deleted snapshot still has (an attempt that outlived its operation may add some): they keep nothing alive. */
export async function dropDeadRefs(db: CatalogDb, scope: GcScope = {}): Promise<number> {
  const res = await sql`
    delete from snapshot_chunks r using snapshots s
    where s.id = r.snapshot_id and s.state in ('failed', 'deleted') and ${inScope('s.account_id', scope)}`.execute(db);
  return Number(res.numAffectedRows ?? 0);
}

/**
 * Mark: live packs none of whose chunks any snapshot references become condemned. A reference
 * committed concurrently is found when the pack's deletion is due (sweepCondemned re-checks under
 * the pack's lock and brings it back to live).
 */
export async function condemnUnreferenced(db: CatalogDb, scope: GcScope = {}): Promise<number> {
  const res = await sql`
    update packs p set state = 'condemned', condemned_at = now(), updated_at = now()
    where p.state = 'live' and ${inScope('p.account_id', scope)}
      and not exists (select 1 from chunks c join snapshot_chunks r on r.chunk_id = c.id where c.pack_id = p.id)`.execute(db);
  return Number(res.numAffectedRows ?? 0);
}

/**
 * Condemned packs whose deletion is due: condemned more than `graceSeconds` ago, and no operation
 * of their account that began before the condemnation still runs (only such an operation could
 * hold a location in the pack it looked up earlier). The longest a pack waits is the operation
 * deadline; the shortest, the grace.
 */
export async function dueCondemned(db: CatalogDb, graceSeconds: number, limit: number, scope: GcScope = {}): Promise<PackRow[]> {
  return db
    .selectFrom('packs as p')
    .selectAll('p')
    .where('p.state', '=', 'condemned')
    .where(inScope('p.account_id', scope))
    .where('p.condemned_at', '<', graceAgo(graceSeconds))
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('operations as o')
            .select('o.id')
            .whereRef('o.account_id', '=', 'p.account_id')
            .where('o.status', '=', 'running')
            .whereRef('o.created_at', '<=', 'p.condemned_at'),
        ),
      ),
    )
    .orderBy('p.condemned_at')
    .limit(limit)
    .execute();
}

/**
 * Under the pack's row lock: still condemned and unreferenced → true (its object may go); a
 * reference appeared → back to live, false.
 */
export async function confirmCondemned(db: CatalogDb, packId: string): Promise<boolean> {
  return db.transaction().execute(async (tx) => {
    const row = await tx.selectFrom('packs').select('state').where('id', '=', packId).forUpdate().executeTakeFirst();
    if (row?.state !== 'condemned') return false;
    const referenced = await sql`
      select 1 from chunks c join snapshot_chunks r on r.chunk_id = c.id where c.pack_id = ${packId} limit 1`.execute(tx);
    if (referenced.rows.length > 0) {
      await tx.updateTable('packs').set({ state: 'live', condemned_at: null, updated_at: sql`now()` }).where('id', '=', packId).execute();
      return false;
    }
    return true;
  });
}

/** After its object is gone: the pack's chunks leave the index and the pack is deleted. */
export async function forgetPack(db: CatalogDb, packId: string): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await tx.deleteFrom('chunks').where('pack_id', '=', packId).execute();
    await tx.updateTable('packs').set({ state: 'deleted', updated_at: sql`now()` }).where('id', '=', packId).where('state', '=', 'condemned').execute();
  });
}

/**
 * Packs left 'writing' by a writer that can no longer commit them (its snapshot is not pending:
 * commitPack refuses), untouched for `graceSeconds`; and the collector's own, after a day.
 */
export async function staleWrites(db: CatalogDb, graceSeconds: number, limit: number, scope: GcScope = {}): Promise<PackRow[]> {
  return db
    .selectFrom('packs as p')
    .selectAll('p')
    .where('p.state', '=', 'writing')
    .where(inScope('p.account_id', scope))
    .where('p.updated_at', '<', graceAgo(graceSeconds))
    .where((eb) =>
      eb.or([
        eb.and([
          eb('p.writer_snapshot_id', 'is not', null),
          eb.not(eb.exists(eb.selectFrom('snapshots as s').select('s.id').whereRef('s.id', '=', 'p.writer_snapshot_id').where('s.state', '=', 'pending'))),
        ]),
        eb.and([eb('p.writer_snapshot_id', 'is', null), eb('p.updated_at', '<', sql<Date>`now() - interval '1 day'`)]),
      ]),
    )
    .limit(limit)
    .execute();
}

/** A stale pack's object is gone: its row is, too (it never had indexed chunks). */
export async function dropStaleWrite(db: CatalogDb, packId: string): Promise<void> {
  await db.updateTable('packs').set({ state: 'deleted', updated_at: sql`now()` }).where('id', '=', packId).where('state', '=', 'writing').execute();
}

/** The pack rows for keys under packs/ (the orphan pass): which ones still have a row that is not deleted. */
export async function packStates(db: CatalogDb, ids: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (let i = 0; i < ids.length; i += 1000) {
    const rows = await db.selectFrom('packs').select(['id', 'state']).where('id', 'in', ids.slice(i, i + 1000)).execute();
    for (const r of rows) out.set(r.id, r.state);
  }
  return out;
}

/** A chunk a repack keeps: where it is now. */
export interface RepackChunk {
  rowId: string;
  hash: string;
  packId: string;
  frameOffset: number;
  frameLength: number;
  frameRawLength: number;
  chunkOffset: number;
  rawLength: number;
}

/**
 * Packs worth rewriting, per account: live ones holding bytes no snapshot references (a deleted
 * snapshot's chunks that share a pack with chunks still in use; only a rewrite frees them), those
 * with the largest unreferenced share first, as they free the most per byte copied; and small ones
 * (under `smallBytes`) when the account has several. Written more than `graceSeconds` ago and not
 * by a snapshot still pending. At most `maxBytes` per account (and at least one pack), so a pass
 * after a mass deletion rewrites a bounded amount and the next passes go on.
 */
export async function repackCandidates(db: CatalogDb, o: { graceSeconds: number; smallBytes: number; maxBytes: number }, scope: GcScope = {}): Promise<Map<string, PackRow[]>> {
  const rows = await sql<PackRow & { raw_bytes: string; referenced_bytes: string }>`
    select p.*, coalesce(sum(c.raw_length), 0) as raw_bytes,
      coalesce(sum(c.raw_length) filter (where exists (select 1 from snapshot_chunks r where r.chunk_id = c.id)), 0) as referenced_bytes
    from packs p join chunks c on c.pack_id = p.id
    where p.state = 'live' and p.chunk_count > 0 and ${inScope('p.account_id', scope)}
      and p.updated_at < ${graceAgo(o.graceSeconds)}
      and not exists (select 1 from snapshots w where w.id = p.writer_snapshot_id and w.state = 'pending')
    group by p.id
    order by p.account_id, p.created_at`.execute(db);
  type Row = (typeof rows.rows)[number];
  const out = new Map<string, PackRow[]>();
  const bytes = new Map<string, number>();
  const take = ({ raw_bytes: _raw, referenced_bytes: _referenced, ...p }: Row) => {
    const used = bytes.get(p.account_id) ?? 0;
    if (used + Number(p.size_bytes) > o.maxBytes && used > 0) return;
    bytes.set(p.account_id, used + Number(p.size_bytes));
    out.set(p.account_id, [...(out.get(p.account_id) ?? []), p]);
  };
  const unreferenced = (r: Row) => 1 - Number(r.referenced_bytes) / Number(r.raw_bytes);
  const wasteful = rows.rows.filter((r) => unreferenced(r) > 0).sort((a, b) => unreferenced(b) - unreferenced(a));
  const small = new Map<string, Row[]>();
  for (const r of rows.rows) if (unreferenced(r) === 0 && Number(r.size_bytes) < o.smallBytes) small.set(r.account_id, [...(small.get(r.account_id) ?? []), r]);
  for (const r of wasteful) take(r);
  for (const packs of small.values()) if (packs.length >= 2) for (const r of packs) take(r);
  return out;
}

/** The referenced chunks of these packs, in pack and frame order (what a repack copies). */
export async function referencedChunksOf(db: CatalogDb, packIds: string[]): Promise<RepackChunk[]> {
  if (packIds.length === 0) return [];
  const res = await sql<{ id: string; h: string; pack_id: string; frame_offset: string; frame_length: number; frame_raw_length: number; chunk_offset: number; raw_length: number }>`
    select c.id, encode(c.hash, 'hex') as h, c.pack_id, c.frame_offset, c.frame_length, c.frame_raw_length, c.chunk_offset, c.raw_length
    from chunks c
    where c.pack_id in (${sql.join(packIds)}) and exists (select 1 from snapshot_chunks r where r.chunk_id = c.id)
    order by c.pack_id, c.frame_offset, c.chunk_offset`.execute(db);
  return res.rows.map((r) => ({
    rowId: String(r.id),
    hash: r.h,
    packId: r.pack_id,
    frameOffset: Number(r.frame_offset),
    frameLength: r.frame_length,
    frameRawLength: r.frame_raw_length,
    chunkOffset: r.chunk_offset,
    rawLength: r.raw_length,
  }));
}

/**
 * The repack's commit, in one transaction: the copied chunks point at the new pack (each only if
 * it is still where it was copied from), the new pack is live and the old ones are condemned. A
 * chunk that became referenced after the copy began stays in its old pack, which the sweep then
 * finds referenced and brings back to live.
 */
export async function commitRepack(
  db: CatalogDb,
  c: { packId: string; sizeBytes: number; sources: string[]; moved: (RepackChunk & { newFrameOffset: number; newFrameLength: number; newFrameRawLength: number; newChunkOffset: number })[] },
): Promise<void> {
  await db.transaction().execute(async (tx) => {
    const pack = await tx.selectFrom('packs').select('state').where('id', '=', c.packId).forUpdate().executeTakeFirst();
    if (pack?.state !== 'writing') throw new Error(`repack ${c.packId} is ${pack?.state ?? 'gone'}, not being written`);
    for (let i = 0; i < c.moved.length; i += 5000) {
      const part = c.moved.slice(i, i + 5000);
      const col = (f: (m: (typeof part)[number]) => string | number) => sql`${`{${part.map(f).join(',')}}`}`;
      await sql`
        update chunks c set pack_id = ${c.packId}, frame_offset = t.fo, frame_length = t.fl, frame_raw_length = t.frl, chunk_offset = t.co
        from unnest(${col((m) => m.rowId)}::bigint[], ${col((m) => m.packId)}::text[], ${col((m) => m.newFrameOffset)}::bigint[],
                    ${col((m) => m.newFrameLength)}::int[], ${col((m) => m.newFrameRawLength)}::int[], ${col((m) => m.newChunkOffset)}::int[])
          as t(id, old_pack, fo, fl, frl, co)
        where c.id = t.id and c.pack_id = t.old_pack`.execute(tx);
    }
    await tx
      .updateTable('packs')
      .set({ state: 'live', size_bytes: c.sizeBytes, chunk_count: c.moved.length, updated_at: sql`now()` })
      .where('id', '=', c.packId)
      .execute();
    if (c.sources.length) {
      await tx
        .updateTable('packs')
        .set({ state: 'condemned', condemned_at: sql`now()`, updated_at: sql`now()` })
        .where('id', 'in', c.sources)
        .where('state', '=', 'live')
        .execute();
    }
  });
}
