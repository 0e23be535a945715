import { createHash } from 'node:crypto';
import { Transform, pipeline } from 'node:stream';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import { packSnapshot } from '../archive/snapshot-format.js';
import { accountUsage, setSnapshotProgress } from '../catalog/snapshots.js';
import { progressReporter } from './progress.js';
import { CagedError } from '../shared/errors.js';

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
  // The first failure is the cause; what follows (tar's broken pipe, the aborted upload) is noise.
  let cause: unknown;
  const fail = (cb: (e: Error) => void, err: Error) => {
    cause ??= err;
    cb(err);
  };
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      hash.update(chunk);
      progress.add(chunk.length);
      if (size > limits.maxSnapshotBytes) {
        fail(cb, new CagedError('limit_exceeded', `limit snapshot_bytes exceeded: the snapshot passed ${limits.maxSnapshotBytes} bytes`, { limit: 'snapshot_bytes', max: limits.maxSnapshotBytes }));
      } else if (usedByOthers + size > limits.maxAccountBytes) {
        fail(cb, new CagedError('limit_exceeded', `limit account_bytes exceeded: the account would store more than ${limits.maxAccountBytes} bytes`, { limit: 'account_bytes', max: limits.maxAccountBytes }));
      } else if (!deps.faultHook) {
        cb(null, chunk);
      } else {
        const hook = deps.faultHook;
        Promise.resolve()
          .then(() => hook('upload:progress', { sandboxId: input.sandboxId, snapshotId: input.snapshotId, bytes: size }))
          .then(
            () => cb(null, chunk),
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
  await progress.flush();
  return { sizeBytes: size, sha256: hash.digest('hex') };
}
