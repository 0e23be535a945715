import { createHash } from 'node:crypto';
import { Transform, pipeline, type TransformCallback } from 'node:stream';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import { packSnapshot } from '../archive/snapshot-format.js';
import { accountUsage, setSnapshotProgress } from '../catalog/snapshots.js';
import { progressReporter } from './progress.js';
import { CagedError } from '../shared/errors.js';

const PROGRESS_INTERVAL_MS = 250;
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
  const { db, store, runtime, limits } = deps;
  const signal = Context.current().cancellationSignal;
  // A previous attempt that died mid-upload may have left a multipart upload or temp file.
  await store.abortIncomplete(input.objectKey);
  const usedByOthers = await accountUsage(db, input.accountId, input.snapshotId);
  const progress = progressReporter(db, input.operationId, 'uploading', (b) => setSnapshotProgress(db, input.snapshotId, b));
  const hash = createHash('sha256');
  let size = 0;
  // Progress is reported at most every 250 ms: a heartbeat per 64 KiB chunk cost more CPU than the hashing.
  let unreported = 0;
  let reportedAt = 0;
  const report = (force: boolean) => {
    const now = Date.now();
    if (unreported > 0 && (force || now - reportedAt >= PROGRESS_INTERVAL_MS)) {
      progress.add(unreported);
      unreported = 0;
      reportedAt = now;
    }
  };
  // The first failure is the cause; what follows (tar's broken pipe, the aborted upload) is noise.
  let cause: unknown;
  const fail = (cb: (e: Error) => void, err: Error) => {
    cause ??= err;
    cb(err);
  };
  // tar's pipe delivers 64 KiB chunks; the store gets them in 1 MiB pieces (16x fewer writes and wakeups).
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const takePending = () => {
    const out = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending = [];
    pendingBytes = 0;
    return out;
  };
  const forward = (chunk: Buffer, cb: TransformCallback) => {
    pending.push(chunk);
    pendingBytes += chunk.length;
    if (pendingBytes < WRITE_CHUNK_BYTES) cb();
    else cb(null, takePending());
  };
  const meter = new Transform({
    flush(cb) {
      if (pendingBytes > 0) cb(null, takePending());
      else cb();
    },
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      hash.update(chunk);
      unreported += chunk.length;
      report(false);
      if (size > limits.maxSnapshotBytes) {
        fail(cb, new CagedError('limit_exceeded', `limit snapshot_bytes exceeded: the snapshot passed ${limits.maxSnapshotBytes} bytes`, { limit: 'snapshot_bytes', max: limits.maxSnapshotBytes }));
      } else if (usedByOthers + size > limits.maxAccountBytes) {
        fail(cb, new CagedError('limit_exceeded', `limit account_bytes exceeded: the account would store more than ${limits.maxAccountBytes} bytes`, { limit: 'account_bytes', max: limits.maxAccountBytes }));
      } else if (!deps.faultHook) {
        forward(chunk, cb);
      } else {
        const hook = deps.faultHook;
        Promise.resolve()
          .then(() => hook('upload:progress', { sandboxId: input.sandboxId, snapshotId: input.snapshotId, bytes: size }))
          .then(
            () => forward(chunk, cb),
            (err: Error) => fail(cb, err),
          );
      }
    },
  });
  const pack = packSnapshot(runtime.rootDir(input.sandboxId), signal);
  pipeline(pack.stream, meter, () => {});
  pack.done.catch((err) => meter.destroy(err));
  try {
    await Promise.all([store.put(input.objectKey, meter, { signal, contentType: 'application/zstd' }), pack.done]);
  } catch (err) {
    pack.kill();
    meter.destroy();
    await store.abortIncomplete(input.objectKey).catch(() => {});
    await store.delete(input.objectKey).catch(() => {});
    throw cause ?? err;
  }
  report(true);
  await progress.flush();
  return { sizeBytes: size, sha256: hash.digest('hex') };
}
