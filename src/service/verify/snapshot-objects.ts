import { createHash } from 'node:crypto';
import { accountsOf, type Check, type Found } from './findings.js';

/**
 * Every ready snapshot's object is in the store with the size the catalog recorded; with `deep`,
 * its bytes hash to the recorded sha256 (streamed, never held in memory). Nothing here is
 * repairable: a lost or damaged archive cannot be rebuilt, only reported.
 */
export const checkSnapshotObjects: Check = async (run) => {
  const { db, store } = run.ctx;
  const accounts = accountsOf(run);
  const rows = await db
    .selectFrom('snapshots')
    .selectAll()
    .where('state', '=', 'ready')
    .$if(accounts !== undefined, (q) => q.where('account_id', 'in', accounts!))
    .orderBy('seq')
    .execute();
  const found: Found[] = [];
  for (const snap of rows) {
    const info = await store.head(snap.object_key);
    if (!info) {
      found.push({ check: 'snapshot_object_missing', subject: snap.id, detail: `object ${snap.object_key} is not in the store` });
      continue;
    }
    const recorded = Number(snap.size_bytes ?? -1);
    if (info.size !== recorded) {
      found.push({ check: 'snapshot_object_size', subject: snap.id, detail: `object ${snap.object_key} has ${info.size} bytes, the catalog records ${recorded}` });
      continue;
    }
    if (run.deep) {
      const hash = createHash('sha256');
      for await (const chunk of await store.get(snap.object_key)) hash.update(chunk as Buffer);
      const actual = hash.digest('hex');
      if (actual !== snap.sha256) {
        found.push({ check: 'snapshot_object_sha256', subject: snap.id, detail: `object ${snap.object_key} hashes to ${actual}, the catalog records ${snap.sha256}` });
      }
    }
  }
  return found;
};
