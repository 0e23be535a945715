import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import { packTreeGzip, transcodeToGzip } from '../archive/snapshot-format.js';
import { isManifestKey, workDir } from './chunk-context.js';
import { rebuildTree } from './snapshot-chunks.js';
import type { ProgressSink } from './progress.js';
import { createMeter } from './stream-meter.js';
import { CagedError } from '../shared/errors.js';
import { signDownload } from '../shared/signed-url.js';
import { getSnapshot } from '../catalog/snapshots.js';
import { layout } from '../storage/layout.js';

export interface ExportArchiveInput {
  operationId: string;
  snapshotId: string;
  objectKey: string;
  sha256: string;
  /** The operation's step while this runs, named by the workflow. */
  step?: string;
}

/**
 * Writes the snapshot as a standard .tar.gz next to it. A repeated export finds the archive and
 * its checksum already there and reuses them.
 */
export async function exportArchive(deps: ActivityDeps, input: ExportArchiveInput, progress: ProgressSink): Promise<{ key: string; sha256: string; sizeBytes: number; reused: boolean }> {
  const { store, db } = deps;
  const row = await getSnapshot(db, input.snapshotId);
  if (!row) throw new CagedError('not_found', `snapshot ${input.snapshotId} not found`);
  const key = layout.export(row.sandbox_id, row.id);
  const sumKey = layout.exportChecksum(row.sandbox_id, row.id);
  const existing = await store.head(key);
  const sum = existing ? await readSmall(deps, sumKey) : undefined;
  if (existing && sum) return { key, sha256: sum, sizeBytes: existing.size, reused: true };

  if (isManifestKey(input.objectKey)) return exportChunked(deps, input, key, sumKey, progress);
  const signal = Context.current().cancellationSignal;
  const hook = deps.faultHook;
  const read = createMeter({ progress, hook: hook && ((bytes) => hook('export:progress', { snapshotId: input.snapshotId, bytes })) });
  const written = createMeter();
  const gz = transcodeToGzip(signal);
  gz.output.on('error', (e) => written.stream.destroy(e));
  gz.output.pipe(written.stream);
  try {
    // Under heartbeats from the first store call: retries of a throttled store can take a while.
    await progress.during(async () => {
      await store.abortIncomplete(key);
      const source = await store.get(input.objectKey, { signal, ...progress.storeHooks });
      await Promise.all([
        pipeline(source, read.stream, gz.input, { signal }),
        store.put(key, written.stream, { signal, contentType: 'application/gzip', ...progress.storeHooks }),
        gz.done,
      ]);
    });
  } catch (err) {
    gz.kill();
    await store.delete(key).catch(() => {});
    throw err;
  }
  if (read.digest() !== input.sha256) {
    await store.delete(key);
    throw new CagedError('checksum_mismatch', `snapshot ${input.snapshotId} is corrupt: its sha256 does not match the catalog`);
  }
  const sha256 = written.digest();
  await putSmall(deps, sumKey, sha256);
  await progress.flush();
  return { key, sha256, sizeBytes: written.bytes, reused: false };
}

/**
 * A chunked snapshot is rebuilt in a scratch directory of this host (every chunk checked) and packed
 * from there by GNU tar, so the archive is what tar makes of the tree, sparse files included.
 */
async function exportChunked(deps: ActivityDeps, input: ExportArchiveInput, key: string, sumKey: string, progress: ProgressSink) {
  const { store } = deps;
  const signal = Context.current().cancellationSignal;
  const hook = deps.faultHook;
  const scratch = path.join(workDir(deps), `export-${input.operationId}`);
  const written = createMeter();
  let tar: ReturnType<typeof packTreeGzip> | undefined;
  try {
    await progress.during(async () => {
      await fs.rm(scratch, { recursive: true, force: true });
      await fs.mkdir(scratch, { recursive: true });
      await store.abortIncomplete(key);
      await rebuildTree(deps, input, scratch, progress, async (n) => {
        progress.add(n);
        await hook?.('export:progress', { snapshotId: input.snapshotId, bytes: progress.bytes });
      });
      const t = (tar = packTreeGzip(scratch, signal));
      t.stream.once('error', (e) => written.stream.destroy(e));
      t.stream.pipe(written.stream);
      await Promise.all([store.put(key, written.stream, { signal, contentType: 'application/gzip', ...progress.storeHooks }), t.done]);
    });
  } catch (err) {
    tar?.kill();
    await store.delete(key).catch(() => {});
    throw err;
  } finally {
    await fs.rm(scratch, { recursive: true, force: true });
  }
  const sha256 = written.digest();
  await putSmall(deps, sumKey, sha256);
  await progress.flush();
  return { key, sha256, sizeBytes: written.bytes, reused: false };
}

/** A URL to download `key`: presigned by S3 itself, or HMAC-signed for the API to serve. */
export async function downloadUrl(deps: ActivityDeps, key: string, filename: string): Promise<{ url: string; expires_at: string }> {
  const seconds = deps.limits.urlExpirySeconds;
  const expiresAt = Math.floor(Date.now() / 1000) + seconds;
  if (deps.store.presignGet) {
    return { url: await deps.store.presignGet(key, seconds, filename), expires_at: new Date(expiresAt * 1000).toISOString() };
  }
  if (!deps.urls) throw new CagedError('internal', 'download URLs need CAGED_URL_SECRET and CAGED_PUBLIC_URL on the worker');
  return { url: signDownload(deps.urls.secret, deps.urls.publicUrl, key, expiresAt), expires_at: new Date(expiresAt * 1000).toISOString() };
}

async function readSmall(deps: ActivityDeps, key: string): Promise<string | undefined> {
  try {
    const chunks: Buffer[] = [];
    for await (const c of await deps.store.get(key)) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8').trim() || undefined;
  } catch (err) {
    if (err instanceof CagedError && err.code === 'not_found') return undefined;
    throw err;
  }
}

async function putSmall(deps: ActivityDeps, key: string, text: string): Promise<void> {
  await deps.store.put(key, Readable.from([Buffer.from(text)]));
}
