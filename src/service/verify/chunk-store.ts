import { sql } from 'kysely';
import { accountChunkKey } from '../../catalog/chunk-store.js';
import { createChunkReader } from '../../chunks/codec.mjs';
import { CagedError } from '../../shared/errors.js';
import type { Check, Found } from './findings.js';

/**
 * The chunk store against its index, as `restic check` does for a repository: every chunk a ready
 * snapshot references is indexed in a pack that is not deleted; every pack the index keeps is in
 * the store with the size it records; with `deep`, every indexed chunk of those packs decompresses
 * and matches its id. None is repairable: lost chunks cannot be rebuilt, only reported, and the
 * snapshots that reference them are named.
 */
export const checkChunkStore: Check = async (run) => {
  const { db, store } = run.ctx;
  const found: Found[] = [];
  const accounts = run.accountIds;
  const missing = await sql<{ snapshot_id: string; n: string }>`
    select r.snapshot_id, count(*) as n
    from snapshot_chunks r
      join snapshots s on s.id = r.snapshot_id and s.state = 'ready'
      left join chunks c on c.id = r.chunk_id
      left join packs p on p.id = c.pack_id
    where (c.id is null or p.state not in ('live', 'condemned'))
      and (${accounts ? sql`s.account_id in (${sql.join(accounts)})` : sql`true`})
    group by r.snapshot_id
    order by r.snapshot_id`.execute(db);
  for (const m of missing.rows) {
    found.push({ check: 'snapshot_chunk_missing', subject: m.snapshot_id, detail: `snapshot ${m.snapshot_id} references ${Number(m.n)} chunks that no stored pack holds` });
  }

  const packs = await db
    .selectFrom('packs')
    .selectAll()
    .where('state', 'in', ['live', 'condemned'])
    .$if(accounts !== undefined, (q) => q.where('account_id', 'in', accounts!))
    .orderBy('id')
    .execute();
  for (const p of packs) {
    const info = await store.head(p.object_key);
    if (!info) {
      found.push({ check: 'pack_object_missing', subject: p.id, detail: `pack ${p.id} (${p.state}) is not in the store at ${p.object_key}` });
      continue;
    }
    if (info.size !== Number(p.size_bytes)) {
      found.push({ check: 'pack_object_size', subject: p.id, detail: `pack ${p.id} has ${info.size} bytes in the store, the index records ${Number(p.size_bytes)}` });
      continue;
    }
    if (run.deep && p.state === 'live') {
      const problem = await damagedChunks(run, p.id, p.object_key, p.account_id);
      if (problem) found.push({ check: 'pack_chunk_damaged', subject: p.id, detail: problem });
    }
  }
  return found;
};

/** Reads a pack (at most ~32 MiB, once) and checks each chunk the index places in it; the first problem, if any. */
async function damagedChunks(run: Parameters<Check>[0], packId: string, key: string, accountId: string): Promise<string | undefined> {
  const { db, store } = run.ctx;
  const parts: Buffer[] = [];
  try {
    for await (const c of await store.get(key)) parts.push(c as Buffer);
  } catch (err) {
    if (err instanceof CagedError && err.code === 'not_found') return `pack ${packId} vanished while it was read`;
    throw err;
  }
  const bytes = Buffer.concat(parts);
  const chunkKey = await accountChunkKey(db, accountId);
  const rows = await sql<{ h: string; frame_offset: string; frame_length: number; frame_raw_length: number; chunk_offset: number; raw_length: number }>`
    select encode(hash, 'hex') as h, frame_offset, frame_length, frame_raw_length, chunk_offset, raw_length
    from chunks where pack_id = ${packId} order by frame_offset, chunk_offset`.execute(db);
  const chunkOf = createChunkReader(chunkKey, (_pack, offset, length) => bytes.subarray(offset, offset + length));
  let bad = 0;
  let first = '';
  for (const r of rows.rows) {
    try {
      chunkOf(packId, { frameOffset: Number(r.frame_offset), frameLength: r.frame_length, frameRawLength: r.frame_raw_length, chunkOffset: r.chunk_offset, length: r.raw_length, id: Buffer.from(r.h, 'hex') });
    } catch (err) {
      bad++;
      first ||= (err as Error).message;
    }
  }
  return bad ? `pack ${packId}: ${bad} of its ${rows.rows.length} indexed chunks are damaged (first: ${first})` : undefined;
}
