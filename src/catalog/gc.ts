import { sql } from 'kysely';
import type { CatalogDb } from './db.js';
import type { PackRow } from './schema.js';

/**
 * The collector's catalog side (mark and sweep over the chunk index, see chunk-store.ts for the
 * rules it keeps with the writers). No lock is held across steps and none blocks a snapshot: each
 * step is one statement, or one short transaction on one pack's row.
 */

/** References a failed or deleted snapshot still has (an attempt that outlived its operation may add some): they keep nothing alive. */
export async function dropDeadRefs(db: CatalogDb): Promise<number> {
  const res = await sql`
    delete from snapshot_chunks r using snapshots s
    where s.id = r.snapshot_id and s.state in ('failed', 'deleted')`.execute(db);
  return Number(res.numAffectedRows ?? 0);
}

/**
 * Mark: live packs none of whose chunks any snapshot references become condemned. A reference
 * committed concurrently is found when the pack's deletion is due (sweepCondemned re-checks under
 * the pack's lock and brings it back to live).
 */
export async function condemnUnreferenced(db: CatalogDb): Promise<number> {
  const res = await sql`
    update packs p set state = 'condemned', condemned_at = now(), updated_at = now()
    where p.state = 'live'
      and not exists (select 1 from chunks c join snapshot_chunks r on r.chunk_id = c.id where c.pack_id = p.id)`.execute(db);
  return Number(res.numAffectedRows ?? 0);
}

/**
 * Condemned packs whose deletion is due: condemned more than `graceSeconds` ago, and no operation
 * of their account that began before the condemnation still runs (only such an operation could
 * hold a location in the pack it looked up earlier). The longest a pack waits is the operation
 * deadline; the shortest, the grace.
 */
export async function dueCondemned(db: CatalogDb, graceSeconds: number, limit: number): Promise<PackRow[]> {
  return db
    .selectFrom('packs as p')
    .selectAll('p')
    .where('p.state', '=', 'condemned')
    .where('p.condemned_at', '<', sql<Date>`now() - make_interval(secs => ${graceSeconds})`)
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
export async function staleWrites(db: CatalogDb, graceSeconds: number, limit: number): Promise<PackRow[]> {
  return db
    .selectFrom('packs as p')
    .selectAll('p')
    .where('p.state', '=', 'writing')
    .where('p.updated_at', '<', sql<Date>`now() - make_interval(secs => ${graceSeconds})`)
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
