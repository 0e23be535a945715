import { pipeline } from 'node:stream/promises';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import { transcodeFromGzip } from '../archive/snapshot-format.js';
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
