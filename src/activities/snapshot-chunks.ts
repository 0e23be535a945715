import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import type { ProgressSink } from './progress.js';
import { CATALOG_WAIT_MS, whileCatalogUnavailable } from './catalog-retry.js';
import { createMeter, snapshotSizeCheck } from './stream-meter.js';
import { chunkContext } from './chunk-context.js';
import {
  accountChunkKey,
  accountStoredBytes,
  dropSnapshotRefs,
  incrementalParent,
  markPackDeleted,
  recordChunkedSnapshot,
  uncommittedPacksOf,
} from '../catalog/chunk-store.js';
import path from 'node:path';
import { fetchParentManifest, writeSnapshot, type ParentManifest } from '../chunks/snapshot-writer.js';
import { restoreTree } from '../chunks/tree-restorer.js';
import { getSnapshot } from '../catalog/snapshots.js';
import { CagedError } from '../shared/errors.js';


export interface RecordTreeInput {
  operationId: string;
  accountId: string;
  sandboxId?: string;
  snapshotId: string;
  /** The manifest's key (the snapshot's object key). */
  objectKey: string;
}

export interface RecordTreeHooks {
  /** Runs once the store and the catalog have answered, right before the tree is walked (the quiesce). */
  beforeRead?: () => Promise<void>;
  /** Runs once every file has been read: the sandbox may go on while the rest is stored. */
  afterRead?: () => Promise<void>;
  /** Where to spool packs for a remote store. */
  spoolDir: string;
  /** Whether to compare with the sandbox's previous snapshot (not for imports). */
  incremental: boolean;
  /** Refuse devices, FIFOs and setuid/setgid files (imports). */
  plainOnly?: boolean;
}

/**
 * Records a tree as a chunked snapshot, idempotently under retry: an earlier attempt's references
 * are dropped and its uncommitted packs removed first (its committed packs stay; their chunks are
 * found and referenced again, not stored twice). The limits are checked as it goes: the logical
 * size against the per-snapshot limit, the bytes it adds to the store against the account's.
 */
export async function recordTree(deps: ActivityDeps, input: RecordTreeInput, tree: string, progress: ProgressSink, hooks: RecordTreeHooks) {
  const { db, store, limits, faultHook } = deps;
  const signal = Context.current().cancellationSignal;
  const { pool, packs } = chunkContext(deps);
  return progress.during(async () => {
    // Where the time goes, logged with the result: an unchanged tree should cost the walk alone.
    let last = performance.now();
    /** Milliseconds since the previous lap. */
    const lap = () => {
      const now = performance.now();
      const ms = Math.round(now - last);
      last = now;
      return ms;
    };
    const prepared = await whileCatalogUnavailable(
      async () => {
        await dropSnapshotRefs(db, input.snapshotId);
        for (const p of await uncommittedPacksOf(db, input.snapshotId)) {
          await store.abortIncomplete(p.object_key);
          await store.delete(p.object_key);
          await markPackDeleted(db, p.id);
        }
        return {
          chunkKey: await accountChunkKey(db, input.accountId),
          parent: hooks.incremental && input.sandboxId ? await incrementalParent(db, input.sandboxId, input.snapshotId) : undefined,
          usedByOthers: await accountStoredBytes(db, input.accountId, { excludeSnapshot: input.snapshotId }),
        };
      },
      { totalMs: CATALOG_WAIT_MS, signal },
    );
    await store.abortIncomplete(input.objectKey);
    const ms = { prepare: lap(), parent: 0, quiesce: 0, write: 0, record: 0 };
    let parent: ParentManifest | undefined;
    if (prepared.parent) {
      const fetched = await fetchParentManifest(store, prepared.parent, path.join(hooks.spoolDir, `parent-${input.snapshotId}.ndjson.zst`), signal);
      if (fetched.problem) deps.log.warn({ snapshotId: input.snapshotId, parentId: prepared.parent.snapshotId, problem: fetched.problem }, 'snapshot reads every file: its parent cannot be used');
      parent = fetched.parent;
    }
    const sizeLimits = snapshotSizeCheck(limits, prepared.usedByOthers);
    ms.parent = lap();
    await hooks.beforeRead?.();
    ms.quiesce = lap();
    let uploaded = 0;
    const result = await writeSnapshot({
      db,
      store,
      packs,
      pool,
      accountId: input.accountId,
      snapshotId: input.snapshotId,
      chunkKey: prepared.chunkKey,
      tree,
      manifestKey: input.objectKey,
      parent,
      spoolDir: hooks.spoolDir,
      plainOnly: hooks.plainOnly,
      signal,
      putOptions: () => ({ ...progress.storeHooks, signal }),
      afterRead: hooks.afterRead,
      onProgress: (p) => sizeLimits(p.logicalBytes, p.storedBytes),
      onBytes: (n) => progress.add(n),
      onUpload: faultHook
        ? async (n) => {
            uploaded += n;
            await faultHook('upload:progress', { sandboxId: input.sandboxId, snapshotId: input.snapshotId, bytes: uploaded });
          }
        : undefined,
    });
    ms.write = lap();
    await whileCatalogUnavailable(
      () => recordChunkedSnapshot(db, input.snapshotId, {
          storedBytes: result.storedBytes,
          manifestBytes: result.manifestBytes,
          treeBytes: result.logicalBytes,
          parentId: parent?.snapshotId ?? null,
        }),
      { totalMs: CATALOG_WAIT_MS, signal },
    );
    deps.log.info(
      {
        snapshotId: input.snapshotId,
        parentId: parent?.snapshotId,
        files: result.files,
        filesRead: result.filesRead,
        filesReused: result.filesReused,
        bytesRead: result.bytesRead,
        logicalBytes: result.logicalBytes,
        storedBytes: result.storedBytes,
        packs: result.packs,
        ms: { ...ms, record: lap() },
      },
      'snapshot recorded',
    );
    return { sizeBytes: result.logicalBytes, sha256: result.sha256, result };
  });
}

/**
 * Rebuilds a chunked snapshot's tree in `dest` (restores, forks, exports); the manifest is hashed
 * as it is read and must match the catalog's sha256, every chunk must match its id.
 */
export async function rebuildTree(
  deps: ActivityDeps,
  snap: { snapshotId: string; objectKey: string; sha256: string },
  dest: string,
  progress: ProgressSink,
  onBytes?: (n: number) => void | Promise<void>,
): Promise<void> {
  const { db, store } = deps;
  const signal = Context.current().cancellationSignal;
  const { pool, packs } = chunkContext(deps);
  const row = await getSnapshot(db, snap.snapshotId);
  if (!row) throw new CagedError('not_found', `snapshot ${snap.snapshotId} not found`);
  const chunkKey = await accountChunkKey(db, row.account_id);
  const meter = createMeter();
  const body = await store.get(snap.objectKey, { signal, ...progress.storeHooks });
  body.once('error', (e) => meter.stream.destroy(e));
  body.pipe(meter.stream);
  try {
    await restoreTree({ db, packs, pool, accountId: row.account_id, chunkKey, manifest: meter.stream, dest, signal, storeOptions: progress.storeHooks, onBytes });
  } finally {
    body.destroy();
  }
  const actual = meter.digest();
  if (actual !== snap.sha256) {
    throw new CagedError('checksum_mismatch', `snapshot ${snap.snapshotId} is corrupt: its manifest's sha256 ${actual} != recorded ${snap.sha256}`);
  }
}
