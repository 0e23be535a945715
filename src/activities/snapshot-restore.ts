import { pipeline } from 'node:stream/promises';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import { unpackSnapshot, unpackSnapshotFile, type Tools } from '../archive/snapshot-format.js';
import type { ProgressSink } from './progress.js';
import { createMeter } from './stream-meter.js';
import { followFile } from './file-follower.js';
import { CagedError } from '../shared/errors.js';
import { isManifestKey } from './chunk-context.js';
import { rebuildTree } from './snapshot-chunks.js';

export interface StageSnapshotInput {
  operationId: string;
  sandboxId: string;
  snapshotId: string;
  objectKey: string;
  sha256: string;
  sizeBytes: number;
  /** The operation's step while this runs, named by the workflow. */
  step?: string;
}

/**
 * Extracts a snapshot from the store into a staging directory beside the sandbox's root, hashing
 * it on the way; the hash is checked before the caller swaps anything. The root itself is not
 * touched: a failure, a cancellation or a checksum mismatch only removes the staging directory.
 */
export async function stageSnapshot(deps: ActivityDeps, input: StageSnapshotInput, progress: ProgressSink): Promise<void> {
  const { store, runtime, db } = deps;
  const signal = Context.current().cancellationSignal;
  const dest = await runtime.prepareStaging(input.sandboxId, input.operationId);
  const hook = deps.faultHook;
  const meter = createMeter({
    progress,
    hook: hook && ((bytes) => hook('restore:extracting', { sandboxId: input.sandboxId, snapshotId: input.snapshotId, bytes })),
  });
  let unpack: Tools | undefined;
  try {
    if (isManifestKey(input.objectKey)) {
      await progress.during(() =>
        rebuildTree(deps, input, dest, progress, async (n) => {
          progress.add(n);
          await hook?.('restore:extracting', { sandboxId: input.sandboxId, snapshotId: input.snapshotId, bytes: progress.bytes });
        }),
      );
      await progress.flush();
      return;
    }
    await progress.during(async () => {
      if (store.local) {
        // zstd reads the object file itself; this process hashes the same file through one reused buffer.
        const file = await store.local.objectFile(input.objectKey);
        const tools = (unpack = unpackSnapshotFile(file, dest, signal));
        const hashing = followFile(file, { writerDone: Promise.resolve(), onChunk: (chunk) => meter.take(chunk), signal });
        hashing.catch(() => tools.kill());
        await Promise.all([hashing, tools.done]);
      } else {
        const tools = (unpack = unpackSnapshot(dest, signal));
        const body = await store.get(input.objectKey, { signal, ...progress.storeHooks });
        await Promise.all([pipeline(body, meter.stream, tools.stream, { signal }), tools.done]);
      }
    });
    const actual = meter.digest();
    if (actual !== input.sha256) {
      throw new CagedError('checksum_mismatch', `snapshot ${input.snapshotId} is corrupt: sha256 ${actual} != recorded ${input.sha256}`);
    }
  } catch (err) {
    unpack?.kill();
    // tar may still be creating files until it is gone; removing the staging directory under it
    // could fail with ENOTEMPTY and report that instead of the real failure.
    await unpack?.done.catch(() => {});
    // The saga's rollbackRoot removes it too, so a failed removal must not hide the cause.
    await runtime.discardStaging(input.sandboxId, input.operationId).catch(() => {});
    throw err;
  }
  await progress.flush();
}
