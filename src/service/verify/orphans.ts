import type { BlobInfo, BlobStore, IncompleteUpload } from '../../storage/blob-store.js';
import type { SnapshotRow } from '../../catalog/schema.js';
import { classifyKey, type KeyFamily } from '../../storage/layout.js';
import { modifiedAt } from '../../storage/modified-at.js';
import { pastGrace, type Check, type CheckRun, type Found } from './findings.js';

interface Owners {
  snapshots: Map<string, SnapshotRow>;
  /** Staging keys of running imports: the upload stays until the import has converted it. */
  importKeys: Set<string>;
  /** Snapshots a running export is writing. */
  exporting: Set<string>;
}

/**
 * Catalog rows of the snapshots the keys name, whatever the account: a store belongs to one
 * deployment, so its objects are checked against every row. Read after the store was listed, so
 * any row written before its object was is visible.
 */
async function loadOwners(run: CheckRun, keys: string[]): Promise<Owners> {
  const { db } = run.ctx;
  const ids = [...new Set(keys.map((k) => classifyKey(k)?.snapshotId).filter((id): id is string => !!id))];
  const snapshots = new Map<string, SnapshotRow>();
  for (let i = 0; i < ids.length; i += 500) {
    for (const row of await db.selectFrom('snapshots').selectAll().where('id', 'in', ids.slice(i, i + 500)).execute()) snapshots.set(row.id, row);
  }
  const running = await db.selectFrom('operations').select(['type', 'snapshot_id', 'input']).where('status', '=', 'running').where('type', 'in', ['import', 'export']).execute();
  const importKeys = new Set<string>();
  const exporting = new Set<string>();
  for (const op of running) {
    if (op.type === 'import') {
      const key = (op.input as { stagingKey?: unknown } | null)?.stagingKey;
      if (typeof key === 'string') importKeys.add(key);
    } else if (op.snapshot_id) exporting.add(op.snapshot_id);
  }
  return { snapshots, importKeys, exporting };
}

/** The families whose keys belong to one snapshot (packs belong to an account: checked with the chunk store). */
type SnapshotFamily = Exclude<KeyFamily, 'pack'>;

/** Why a complete object has no live owner, or undefined when it has one. */
function objectOrphaned(key: string, family: SnapshotFamily, row: SnapshotRow | undefined, owners: Owners): string | undefined {
  if (family === 'manifest' || family === 'archive') {
    if (row && row.object_key === key && ['pending', 'ready', 'deleting'].includes(row.state)) return undefined;
  } else if (family === 'export') {
    // A deleting snapshot's delete removes its export next.
    if (row && (row.state === 'ready' || row.state === 'deleting')) return undefined;
  } else if (row?.state === 'pending' || owners.importKeys.has(key)) return undefined;
  return row ? `its snapshot ${row.id} is ${row.state}` : `no snapshot ${classifyKey(key)!.snapshotId} in the catalog`;
}

/** Why an unfinished upload has no live writer, or undefined when it may still have one. */
function uploadOrphaned(family: SnapshotFamily, snapshotId: string, row: SnapshotRow | undefined, owners: Owners): string | undefined {
  if (family === 'export' ? owners.exporting.has(snapshotId) : row?.state === 'pending') return undefined;
  return row ? `its snapshot ${row.id} is ${row.state}${family === 'export' ? ' and no export of it runs' : ''}` : `no snapshot ${snapshotId} in the catalog`;
}

/** The later of two moments: an orphan counts as old only once both the object and its row are. */
const later = (a: Date | undefined, b: Date | undefined) => (!a ? b : !b ? a : a > b ? a : b);

/**
 * Objects and unfinished uploads (multipart uploads, temp files) that no live catalog row owns,
 * older than the grace period. Their repair deletes them. Keys of no known family are reported and
 * left alone. Unfinished uploads are listed only by stores that can (`listIncomplete`).
 */
export const checkOrphans: Check = async (run) => {
  const { store } = run.ctx;
  const objects: BlobInfo[] = [];
  for await (const info of store.list('')) objects.push(info);
  const uploads: IncompleteUpload[] = [];
  if (store.listIncomplete) for await (const up of store.listIncomplete('')) uploads.push(up);
  const owners = await loadOwners(run, [...objects.map((o) => o.key), ...uploads.map((u) => u.key)]);

  const found: Found[] = [];
  for (const obj of objects) {
    const kind = classifyKey(obj.key);
    if (!kind) {
      found.push({ check: 'unknown_object', subject: obj.key, detail: `object of ${obj.size} bytes outside every key family caged writes; left alone` });
      continue;
    }
    if (kind.family === 'pack' || !kind.snapshotId) continue;
    const row = owners.snapshots.get(kind.snapshotId);
    const why = objectOrphaned(obj.key, kind.family, row, owners);
    if (!why || !pastGrace(run, later(await modifiedAt(store, obj), row?.updated_at))) continue;
    // Gone since the listing (a rollback finishing): nothing to report.
    if (!(await store.head(obj.key))) continue;
    found.push({
      check: 'orphan_object',
      subject: obj.key,
      detail: `${kind.family} object of ${obj.size} bytes: ${why}`,
      repair: async () => {
        await store.delete(obj.key);
        return true;
      },
    });
  }
  const seen = new Set<string>();
  for (const up of uploads) {
    if (seen.has(up.key)) continue;
    const kind = classifyKey(up.key);
    if (!kind) {
      found.push({ check: 'unknown_object', subject: up.key, detail: `unfinished upload ${up.uploadId} outside every key family caged writes; left alone` });
      continue;
    }
    if (kind.family === 'pack' || !kind.snapshotId) continue;
    const row = owners.snapshots.get(kind.snapshotId);
    const why = uploadOrphaned(kind.family, kind.snapshotId, row, owners);
    // Every unfinished upload of the key must be old: abortIncomplete removes them all.
    const all = uploads.filter((u) => u.key === up.key);
    if (!why || !all.every((u) => pastGrace(run, later(u.initiated, row?.updated_at)))) continue;
    seen.add(up.key);
    found.push({
      check: 'orphan_upload',
      subject: up.key,
      detail: `${all.length} unfinished ${kind.family} upload(s): ${why}`,
      repair: async () => {
        await store.abortIncomplete(up.key);
        return true;
      },
    });
  }
  return found;
};
