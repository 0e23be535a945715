import { pipeline } from 'node:stream';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import { packSnapshot } from '../archive/snapshot-format.js';
import { accountUsage, setSnapshotProgress } from '../catalog/snapshots.js';
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

/**
 * Streams the (quiesced) sandbox root as tar.zst into the blob store, hashing on the way. Memory
 * stays bounded by the store's part buffers. The size limits are checked on every chunk, so an
 * oversized snapshot is aborted as soon as it crosses a limit, not after it is stored.
 */
export async function uploadSnapshot(deps: ActivityDeps, input: UploadSnapshotInput): Promise<{ sizeBytes: number; sha256: string }> {
  const { db, store, runtime, limits, faultHook } = deps;
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
  const pack = packSnapshot(runtime.rootDir(input.sandboxId), signal);
  pipeline(pack.stream, meter.stream, () => {});
  pack.done.catch((err) => meter.stream.destroy(err));
  try {
    await Promise.all([store.put(input.objectKey, meter.stream, { signal, contentType: 'application/zstd' }), pack.done]);
  } catch (err) {
    pack.kill();
    meter.stream.destroy();
    await store.abortIncomplete(input.objectKey).catch(() => {});
    await store.delete(input.objectKey).catch(() => {});
    throw meter.error ?? err;
  }
  await progress.flush();
  return { sizeBytes: meter.bytes, sha256: meter.digest() };
}
