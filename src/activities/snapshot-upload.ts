import { pipeline } from 'node:stream';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import { packSnapshot, packSnapshotToFile, type Tools } from '../archive/snapshot-format.js';
import { accountUsage, setSnapshotProgress } from '../catalog/snapshots.js';
import type { LocalObjects } from '../storage/blob-store.js';
import { followFile } from './file-follower.js';
import { progressReporter } from './progress.js';
import { createMeter, snapshotSizeCheck } from './stream-meter.js';

/** tar's pipe delivers 64 KiB chunks; the store gets them in 1 MiB pieces (16x fewer writes and wakeups). */
const WRITE_CHUNK_BYTES = 1024 * 1024;

export interface UploadSnapshotInput {
  operationId: string;
  accountId: string;
  sandboxId: string;
  snapshotId: string;
  objectKey: string;
}

type Meter = ReturnType<typeof createMeter>;

/**
 * Packs the (quiesced) sandbox root as tar.zst into the blob store, hashing on the way. The size
 * limits are checked on every chunk, so an oversized snapshot is aborted as soon as it crosses a
 * limit, not after it is stored. Nothing is left under the key unless the whole archive is.
 */
export async function uploadSnapshot(
  deps: ActivityDeps,
  input: UploadSnapshotInput,
  /** Runs once the tree has been read whole, while the archive may still be on its way to the store. */
  afterPack?: () => Promise<void>,
): Promise<{ sizeBytes: number; sha256: string }> {
  const { db, store, limits, faultHook } = deps;
  const signal = Context.current().cancellationSignal;
  // A previous attempt that died mid-upload may have left a multipart upload or temp file.
  await store.abortIncomplete(input.objectKey);
  const usedByOthers = await accountUsage(db, input.accountId, input.snapshotId);
  const progress = progressReporter(db, input.operationId, 'uploading', (b) => setSnapshotProgress(db, input.snapshotId, b));
  const meter = createMeter({
    progress,
    check: snapshotSizeCheck(limits, usedByOthers),
    hook: faultHook && ((bytes) => faultHook('upload:progress', { sandboxId: input.sandboxId, snapshotId: input.snapshotId, bytes })),
    batchBytes: WRITE_CHUNK_BYTES,
  });
  const root = deps.runtime.rootDir(input.sandboxId);
  await progress.during(() =>
    store.local
      ? packIntoLocalFile(store.local, root, input.objectKey, meter, signal, afterPack)
      : packIntoStream(deps, root, input.objectKey, meter, signal, afterPack),
  );
  await progress.flush();
  return { sizeBytes: meter.bytes, sha256: meter.digest() };
}

/** Remote stores: the archive streams through this process into store.put (bounded by its part buffers). */
async function packIntoStream(deps: ActivityDeps, root: string, key: string, meter: Meter, signal: AbortSignal, afterPack?: () => Promise<void>): Promise<void> {
  const { store } = deps;
  const pack = packSnapshot(root, signal);
  pipeline(pack.stream, meter.stream, () => {});
  pack.done.catch((err) => meter.stream.destroy(err));
  try {
    await Promise.all([store.put(key, meter.stream, { signal, contentType: 'application/zstd' }), pack.done.then(afterPack)]);
  } catch (err) {
    pack.kill();
    meter.stream.destroy();
    await store.abortIncomplete(key).catch(() => {});
    await store.delete(key).catch(() => {});
    throw meter.error ?? err;
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
