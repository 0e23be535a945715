import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import { unpackSnapshot } from '../archive/snapshot-format.js';
import { prepareStaging, removeStaging } from '../sandbox/root-swap.js';
import { progressReporter } from './progress.js';
import { CagedError } from '../shared/errors.js';

const PROGRESS_INTERVAL_MS = 250;

export interface StageSnapshotInput {
  operationId: string;
  sandboxId: string;
  snapshotId: string;
  objectKey: string;
  sha256: string;
  sizeBytes: number;
}

/**
 * Streams a snapshot from the store into a staging directory beside the sandbox's root, hashing
 * it on the way. The root itself is not touched: a failure, a cancellation or a checksum mismatch
 * only removes the staging directory.
 */
export async function stageSnapshot(deps: ActivityDeps, input: StageSnapshotInput): Promise<void> {
  const { store, runtime, db } = deps;
  const signal = Context.current().cancellationSignal;
  const sandboxDir = runtime.sandboxDir(input.sandboxId);
  const dest = await prepareStaging(sandboxDir, input.operationId);
  const progress = progressReporter(db, input.operationId, 'extracting');
  const hash = createHash('sha256');
  const hook = deps.faultHook;
  // Progress is reported at most every 250 ms: a heartbeat per 64 KiB chunk cost more CPU than the hashing.
  let bytes = 0;
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
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      unreported += chunk.length;
      report(false);
      if (!hook) return cb(null, chunk);
      Promise.resolve()
        .then(() => hook('restore:extracting', { sandboxId: input.sandboxId, snapshotId: input.snapshotId, bytes }))
        .then(() => cb(null, chunk), cb);
    },
  });
  const unpack = unpackSnapshot(dest, signal);
  try {
    const body = await store.get(input.objectKey, { signal });
    await Promise.all([pipeline(body, meter, unpack.stream, { signal }), unpack.done]);
    const actual = hash.digest('hex');
    if (actual !== input.sha256) {
      throw new CagedError('checksum_mismatch', `snapshot ${input.snapshotId} is corrupt: sha256 ${actual} != recorded ${input.sha256}`);
    }
  } catch (err) {
    unpack.kill();
    // tar may still be creating files until it is gone; removing the staging directory under it
    // could fail with ENOTEMPTY and report that instead of the real failure.
    await unpack.done.catch(() => {});
    // The saga's rollbackRoot removes it too, so a failed removal must not hide the cause.
    await removeStaging(sandboxDir, input.operationId).catch(() => {});
    throw err;
  }
  report(true);
  await progress.flush();
}
