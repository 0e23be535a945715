import { createHash } from 'node:crypto';
import type { SnapshotRow } from '../../catalog/schema.js';
import type { BlobStore } from '../../storage/blob-store.js';
import { getSnapshot } from '../../catalog/snapshots.js';
import { CagedError } from '../../shared/errors.js';
import type { Check, Found } from './findings.js';
import { snapshotsIn } from './snapshot-rows.js';

/** The object's problem, if it has one; undefined when it matches the row. */
async function objectProblem(store: BlobStore, snap: SnapshotRow, deep: boolean): Promise<Omit<Found, 'subject'> | undefined> {
  const info = await store.head(snap.object_key);
  if (!info) return { check: 'snapshot_object_missing', detail: `object ${snap.object_key} is not in the store` };
  // A chunked snapshot's object is its manifest (its size_bytes is what its files hold).
  const recorded = Number((snap.format === 'chunks' ? snap.manifest_bytes : snap.size_bytes) ?? -1);
  if (info.size !== recorded) {
    return { check: 'snapshot_object_size', detail: `object ${snap.object_key} has ${info.size} bytes, the catalog records ${recorded}` };
  }
  if (!deep) return undefined;
  const hash = createHash('sha256');
  try {
    for await (const chunk of await store.get(snap.object_key)) hash.update(chunk as Buffer);
  } catch (err) {
    if (err instanceof CagedError && err.code === 'not_found') return { check: 'snapshot_object_missing', detail: `object ${snap.object_key} is not in the store` };
    throw err;
  }
  const actual = hash.digest('hex');
  if (actual === snap.sha256) return undefined;
  return { check: 'snapshot_object_sha256', detail: `object ${snap.object_key} hashes to ${actual}, the catalog records ${snap.sha256}` };
}

/**
 * Every ready snapshot's object is in the store with the size the catalog recorded; with `deep`,
 * its bytes hash to the recorded sha256 (streamed, never held in memory). Nothing here is
 * repairable: a lost or damaged archive cannot be rebuilt, only reported.
 */
export const checkSnapshotObjects: Check = async (run) => {
  const { db, store } = run.ctx;
  const found: Found[] = [];
  for (const snap of await snapshotsIn(run, 'ready')) {
    const problem = await objectProblem(store, snap, run.deep);
    // A snapshot deleted meanwhile has lost its object on purpose.
    if (problem && (await getSnapshot(db, snap.id))?.state === 'ready') found.push({ ...problem, subject: snap.id });
  }
  return found;
};
