import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import { transcodeFromGzip } from '../archive/snapshot-format.js';
import { progressReporter } from './progress.js';
import { CagedError } from '../shared/errors.js';

export interface ConvertImportInput {
  operationId: string;
  snapshotId: string;
  stagingKey: string;
  objectKey: string;
}

/**
 * Turns an uploaded .tar.gz (validated by the API before it was accepted) into the snapshot
 * format, with the per-snapshot size limit enforced while streaming.
 */
export async function convertImport(deps: ActivityDeps, input: ConvertImportInput): Promise<{ sizeBytes: number; sha256: string }> {
  const { store, db, limits } = deps;
  const signal = Context.current().cancellationSignal;
  await store.abortIncomplete(input.objectKey);
  const progress = progressReporter(db, input.operationId, 'converting');
  const hash = createHash('sha256');
  let size = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _e, cb) {
      size += chunk.length;
      hash.update(chunk);
      progress.add(chunk.length);
      if (size > limits.maxSnapshotBytes) {
        return cb(new CagedError('limit_exceeded', `limit snapshot_bytes exceeded: the snapshot passed ${limits.maxSnapshotBytes} bytes`, { limit: 'snapshot_bytes' }));
      }
      cb(null, chunk);
    },
  });
  const tx = transcodeFromGzip(signal);
  tx.output.on('error', (e) => meter.destroy(e));
  tx.output.pipe(meter);
  try {
    const source = await store.get(input.stagingKey, { signal });
    await Promise.all([pipeline(source, tx.input, { signal }), store.put(input.objectKey, meter, { signal }), tx.done]);
  } catch (err) {
    tx.kill();
    await store.delete(input.objectKey).catch(() => {});
    throw err;
  }
  await progress.flush();
  return { sizeBytes: size, sha256: hash.digest('hex') };
}
