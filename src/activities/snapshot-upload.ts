import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import { packSnapshotToFile, type Tools } from '../archive/snapshot-format.js';
import { accountUsage, setSnapshotProgress } from '../catalog/snapshots.js';
import { progressReporter } from './progress.js';
import { CATALOG_WAIT_MS, whileCatalogUnavailable } from './catalog-retry.js';
import type { LocalObjects, PutOptions } from '../storage/blob-store.js';
import { followFile } from './file-follower.js';
import { CagedError } from '../shared/errors.js';
import type { ProgressSink } from './progress.js';
import { createMeter, snapshotSizeCheck } from './stream-meter.js';
import { isManifestKey } from './chunk-context.js';
import { recordTree } from './snapshot-chunks.js';

/** What may wait between the spool's follower and the store's part buffers. */
const WRITE_CHUNK_BYTES = 1024 * 1024;
/** Beside the sandbox's root (same filesystem, removed with the sandbox): where remote uploads spool. */
const SPOOL_DIR = 'upload-spool';


export interface UploadSnapshotInput {
  operationId: string;
  accountId: string;
  sandboxId: string;
  snapshotId: string;
  objectKey: string;
  /** The operation's step while this runs, named by the workflow. */
  step?: string;
}

type Meter = ReturnType<typeof createMeter>;

/** The sink of a snapshot upload: the operation's progress, and the pending snapshot's bytes so far. */
export function uploadProgress(deps: ActivityDeps, input: UploadSnapshotInput): ProgressSink {
  return progressReporter(deps.db, input.operationId, input.step ?? 'uploading', (b) => setSnapshotProgress(deps.db, input.snapshotId, b));
}

/**
 * Packs the (quiesced) sandbox root as tar.zst into the blob store, hashing on the way. The size
 * limits are checked on every chunk, so an oversized snapshot is aborted as soon as it crosses a
 * limit, not after it is stored. Nothing is left under the key unless the whole archive is.
 */
export async function uploadSnapshot(
  deps: ActivityDeps,
  input: UploadSnapshotInput,
  progress: ProgressSink,
  /** Runs once the tree has been read whole, while the archive may still be on its way to the store. */
  afterPack?: () => Promise<void>,
  /** Runs once the store and the catalog have answered, right before the tree is read (the quiesce). */
  beforePack?: () => Promise<void>,
): Promise<{ sizeBytes: number; sha256: string }> {
  if (isManifestKey(input.objectKey)) return recordSandboxTree(deps, input, progress, afterPack, beforePack);
  const { db, store, limits, faultHook } = deps;
  const ctx = Context.current();
  const signal = ctx.cancellationSignal;
  const prior = priorUploadIds(ctx.info.heartbeatDetails);
  // Multipart upload ids, heartbeat for the next attempt: the previous attempt's until they are aborted, then this one's.
  const uploadIds: string[] = [...prior];
  progress.note('uploadIds', uploadIds);
  // Everything runs under heartbeats: a store that throttles the first calls must not look like a dead worker.
  const meter = await progress.during(async () => {
    // A previous attempt that died mid-upload may have left a multipart upload or temp file; the
    // upload ids it heartbeat find it even on servers that cannot list multipart uploads.
    await store.abortIncomplete(input.objectKey, prior);
    uploadIds.length = 0;
    const usedByOthers = await whileCatalogUnavailable(() => accountUsage(db, input.accountId, input.snapshotId), { totalMs: CATALOG_WAIT_MS, signal });
    // Only now, with the store and the catalog heard from, is the sandbox stopped.
    await beforePack?.();
    const meter = createMeter({
      progress,
      check: snapshotSizeCheck(limits, usedByOthers),
      hook: faultHook && ((bytes) => faultHook('upload:progress', { sandboxId: input.sandboxId, snapshotId: input.snapshotId, bytes })),
    });
    const root = deps.runtime.snapshotTree(input.sandboxId);
    await (store.local
      ? packIntoLocalFile(store.local, root, input.objectKey, meter, signal, afterPack)
      : packViaSpool(deps, input, meter, signal, {
          afterPack,
          putOptions: {
            ...progress.storeHooks,
            // Heartbeat at once: a worker that dies in the next second must not take the id with it.
            onUploadStarted: (id) => {
              uploadIds.push(id);
              progress.note('uploadIds', uploadIds, true);
            },
          },
          uploadIds,
        }));
    return meter;
  });
  await progress.flush();
  return { sizeBytes: meter.bytes, sha256: meter.digest() };
}

/** A chunked snapshot of the sandbox's tree, compared with its previous one. */
async function recordSandboxTree(
  deps: ActivityDeps,
  input: UploadSnapshotInput,
  progress: ProgressSink,
  afterRead?: () => Promise<void>,
  beforeRead?: () => Promise<void>,
): Promise<{ sizeBytes: number; sha256: string }> {
  const spoolDir = await deps.runtime.scratchDir(input.sandboxId, SPOOL_DIR);
  try {
    const { sizeBytes, sha256 } = await recordTree(deps, input, deps.runtime.snapshotTree(input.sandboxId), progress, { beforeRead, afterRead, spoolDir, incremental: true });
    await progress.flush();
    return { sizeBytes, sha256 };
  } finally {
    await deps.runtime.removeScratch(input.sandboxId, SPOOL_DIR);
  }
}

function priorUploadIds(details: unknown): string[] {
  const ids = (details as { uploadIds?: unknown } | undefined)?.uploadIds;
  return Array.isArray(ids) ? ids.filter((x): x is string => typeof x === 'string') : [];
}

/**
 * Remote stores: tar | zstd write a spool file beside the sandbox's root, and this process follows
 * it as it grows (hash, meter, limits, as for local stores) and streams it into store.put. The
 * archive's producer never waits for the network: the sandbox resumes as soon as tar has read the
 * tree, and a throttled or reset part is retried by the store (RetryingBlobStore) from its buffer,
 * not by a new attempt of the activity that would quiesce the sandbox again. Memory stays bounded
 * by the store's part buffers; the spool is removed on every path.
 */
async function packViaSpool(
  deps: ActivityDeps,
  input: UploadSnapshotInput,
  meter: Meter,
  signal: AbortSignal,
  o: { afterPack?: () => Promise<void>; putOptions: PutOptions; uploadIds: string[] },
): Promise<void> {
  const { store } = deps;
  const key = input.objectKey;
  const spoolDir = await deps.runtime.scratchDir(input.sandboxId, SPOOL_DIR);
  const spool = path.join(spoolDir, `${input.snapshotId}.tar.zst`);
  const handle = await fs.open(spool, 'w');
  const stop = new AbortController();
  const stopped = AbortSignal.any([signal, stop.signal]);
  const body = new PassThrough({ highWaterMark: WRITE_CHUNK_BYTES });
  // Its errors reach us through the follower and the put; the stream itself must not throw them again.
  body.on('error', () => {});
  let pack: Tools | undefined;
  let put: Promise<unknown> | undefined;
  try {
    pack = packSnapshotToFile(deps.runtime.snapshotTree(input.sandboxId), handle.fd, stopped);
    const packed = pack.done;
    const follow = followFile(spool, {
      writerDone: packed,
      signal: stopped,
      onChunk: async (chunk) => {
        await meter.take(chunk);
        // The follower reuses its buffer: the store gets a copy, and the follower waits while the store's parts are full.
        if (!body.write(Buffer.from(chunk))) await once(body, 'drain', { signal: stopped });
      },
    })
      // The archive ends the upload only if tar and zstd succeeded: otherwise the put fails, and no object appears.
      .then(() => packed)
      .then(
        () => void body.end(),
        (err: unknown) => {
          body.destroy(err instanceof Error ? err : new Error(String(err)));
          throw err;
        },
      );
    put = store.put(key, body, { ...o.putOptions, signal: stopped, contentType: 'application/zstd' });
    await Promise.all([packed.then(o.afterPack), follow, put]);
  } catch (err) {
    stop.abort();
    pack?.kill();
    body.destroy();
    await pack?.done.catch(() => {});
    // The put aborts its own multipart upload on the way out; clean only after it has settled.
    await put?.catch(() => {});
    // A store that stayed unavailable past the bound would only hold the failure back by as long
    // again: the workflow's compensation (deleteObject) cleans up then.
    if (!(err instanceof CagedError && err.code === 'storage_unavailable')) {
      await store.abortIncomplete(key, o.uploadIds).catch(() => {});
      await store.delete(key).catch(() => {});
    }
    throw meter.error ?? err;
  } finally {
    await handle.close().catch(() => {});
    await deps.runtime.removeScratch(input.sandboxId, SPOOL_DIR);
  }
}

/**
 * Local stores: zstd writes the staged object itself, and this process follows the file as it
 * grows to hash and meter it through one reused buffer. On a 2-core host that is what keeps a
 * snapshot close to plain tar | zstd: the archive's bytes are never copied into JS buffers.
 */
async function packIntoLocalFile(
  local: LocalObjects,
  root: string,
  key: string,
  meter: Meter,
  signal: AbortSignal,
  afterPack?: () => Promise<void>,
): Promise<void> {
  const staged = await local.stage(key);
  const stop = new AbortController();
  const stopped = AbortSignal.any([signal, stop.signal]);
  let pack: Tools | undefined;
  try {
    pack = packSnapshotToFile(root, staged.fd, stopped);
    const follow = followFile(staged.path, { writerDone: pack.done, onChunk: (chunk) => meter.take(chunk), signal: stopped, writeback: true });
    await Promise.all([pack.done.then(afterPack), follow]);
    await staged.publish();
  } catch (err) {
    stop.abort();
    pack?.kill();
    await pack?.done.catch(() => {});
    await staged.discard();
    throw meter.error ?? err;
  }
}
