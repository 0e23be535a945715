import { pipeline } from 'node:stream/promises';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import { transcodeFromGzip, unpackGzip } from '../archive/snapshot-format.js';
import { isManifestKey, workDir } from './chunk-context.js';
import { recordTree } from './snapshot-chunks.js';
import { getSnapshot } from '../catalog/snapshots.js';
import { CagedError } from '../shared/errors.js';
import type { ProgressSink } from './progress.js';
import { createMeter, snapshotSizeCheck } from './stream-meter.js';

export interface ConvertImportInput {
  operationId: string;
  snapshotId: string;
  stagingKey: string;
  objectKey: string;
  /** The operation's step while this runs, named by the workflow. */
  step?: string;
}

/**
 * Turns an uploaded .tar.gz (validated by the API before it was accepted) into the snapshot
 * format, with the per-snapshot size limit enforced while streaming.
 */
export async function convertImport(deps: ActivityDeps, input: ConvertImportInput, progress: ProgressSink): Promise<{ sizeBytes: number; sha256: string }> {
  if (isManifestKey(input.objectKey)) return importChunked(deps, input, progress);
  const { store, db, limits } = deps;
  const signal = Context.current().cancellationSignal;
  const meter = createMeter({ progress, check: snapshotSizeCheck(limits) });
  const tx = transcodeFromGzip(signal);
  tx.output.on('error', (e) => meter.stream.destroy(e));
  tx.output.pipe(meter.stream);
  try {
    // Under heartbeats from the first store call: retries of a throttled store can take a while.
    await progress.during(async () => {
      await store.abortIncomplete(input.objectKey);
      const source = await store.get(input.stagingKey, { signal, ...progress.storeHooks });
      await Promise.all([pipeline(source, tx.input, { signal }), store.put(input.objectKey, meter.stream, { signal, ...progress.storeHooks }), tx.done]);
    });
  } catch (err) {
    tx.kill();
    await store.delete(input.objectKey).catch(() => {});
    throw err;
  }
  await progress.flush();
  return { sizeBytes: meter.bytes, sha256: meter.digest() };
}

/**
 * An upload becomes a chunked snapshot: extracted by GNU tar into a scratch directory of this host
 * (the API validated the archive before it accepted it), then recorded like a sandbox's tree.
 */
async function importChunked(deps: ActivityDeps, input: ConvertImportInput, progress: ProgressSink): Promise<{ sizeBytes: number; sha256: string }> {
  const { store, db } = deps;
  const signal = Context.current().cancellationSignal;
  const row = await getSnapshot(db, input.snapshotId);
  if (!row) throw new CagedError('not_found', `snapshot ${input.snapshotId} not found`);
  const base = path.join(workDir(deps), `import-${input.operationId}`);
  const tree = path.join(base, 'tree');
  const spoolDir = path.join(base, 'spool');
  let tar: ReturnType<typeof unpackGzip> | undefined;
  try {
    await fs.rm(base, { recursive: true, force: true });
    await fs.mkdir(tree, { recursive: true });
    await fs.mkdir(spoolDir, { recursive: true });
    await progress.during(async () => {
      const t = (tar = unpackGzip(tree, signal));
      const source = await store.get(input.stagingKey, { signal, ...progress.storeHooks });
      await Promise.all([pipeline(source, t.stream, { signal }), t.done]);
    });
    const { sizeBytes, sha256 } = await recordTree(
      deps,
      { operationId: input.operationId, accountId: row.account_id, snapshotId: input.snapshotId, objectKey: input.objectKey },
      tree,
      progress,
      { spoolDir, incremental: false, plainOnly: true },
    );
    await progress.flush();
    return { sizeBytes, sha256 };
  } catch (err) {
    tar?.kill();
    await store.delete(input.objectKey).catch(() => {});
    throw err;
  } finally {
    await fs.rm(base, { recursive: true, force: true });
  }
}
