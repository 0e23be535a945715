import { PassThrough, type Readable } from 'node:stream';
import type { AppContext } from './context.js';
import type { SandboxRow } from '../catalog/schema.js';
import { discardReservation, reserveSnapshot, setSnapshotTreeBytes } from '../catalog/snapshots.js';
import { submitOperation } from './operations.js';
import { layout } from '../storage/layout.js';
import { validateTarGz } from '../archive/validate-import.js';
import { newSnapshotId, randomSuffix } from '../shared/ids.js';
import { CagedError } from '../shared/errors.js';

/**
 * Import: the body is streamed once, into the store under a staging key and through the validator
 * at the same time. Only a valid archive becomes a snapshot (the import workflow converts it);
 * otherwise the upload and the reservation are removed and nothing is stored.
 */
/** `declared` is the request's Content-Length (NaN when absent): an oversized upload is refused before it is read. */
export async function importSnapshot(ctx: AppContext, sandbox: SandboxRow, name: string, source: Readable, declared: number) {
  const id = sandbox.id;
  const limits = ctx.config.limits;
  if (declared > limits.maxSnapshotBytes) {
    throw new CagedError('limit_exceeded', `limit snapshot_bytes exceeded: the upload is ${declared} bytes, over ${limits.maxSnapshotBytes}`, { limit: 'snapshot_bytes' });
  }
  const snapshotId = newSnapshotId();
  // Reserved first, so a taken name or a full sandbox is refused before any byte is stored.
  const { snapshot } = await reserveSnapshot(
    ctx.db,
    { id: snapshotId, accountId: sandbox.account_id, sandboxId: id, name, kind: 'manual' },
    limits,
  );
  const stagingKey = layout.importUpload(id, snapshotId, randomSuffix(6));
  const toValidator = new PassThrough({ highWaterMark: 1 << 20 });
  const toStore = new PassThrough({ highWaterMark: 1 << 20 });
  // Their errors surface through validateTarGz and put; an 'error' event after those have
  // stopped listening must not become an uncaught exception.
  toValidator.on('error', () => {});
  toStore.on('error', () => {});
  source.pipe(toValidator);
  source.pipe(toStore);
  source.on('error', (e) => {
    toValidator.destroy(e);
    toStore.destroy(e);
  });
  const abort = new AbortController();
  const validated = validateTarGz(
    toValidator,
    {
      maxEntries: limits.importMaxEntries,
      maxPathLength: limits.importMaxPathLength,
      maxUncompressedBytes: limits.importMaxUncompressedBytes,
      maxCompressedBytes: limits.maxSnapshotBytes,
      // The per-snapshot limit bounds what the snapshot expands to, not only what it stores:
      // a small archive of a huge file of zeros is refused at that file's header.
      maxTreeBytes: limits.maxSnapshotBytes,
    },
    abort.signal,
  ).catch((err) => {
    // Refused: stop the upload while it still reads. Once it has read every byte it is left to
    // finish (aborting a finished stream would only race with it) and its object is deleted below.
    if (!toStore.readableEnded && !abort.signal.aborted) {
      abort.abort(err);
      source.unpipe(toStore);
    }
    source.resume();
    throw err;
  });
  const stored = ctx.store.put(stagingKey, toStore, { signal: abort.signal, contentType: 'application/gzip' }).catch((err) => {
    if (!abort.signal.aborted) abort.abort(err);
    throw err;
  });
  // Both settle before anything is cleaned up: a store write still in flight could otherwise
  // land after the delete and leave the refused upload behind.
  const [v, p] = await Promise.allSettled([validated, stored]);
  if (v.status === 'rejected' || p.status === 'rejected') {
    await ctx.store.abortIncomplete(stagingKey).catch(() => {});
    await ctx.store.delete(stagingKey).catch(() => {});
    await discardReservation(ctx.db, snapshotId);
    const err = v.status === 'rejected' && v.reason instanceof CagedError ? v.reason : p.status === 'rejected' ? p.reason : (v as PromiseRejectedResult).reason;
    throw err instanceof CagedError ? err : new CagedError('invalid_archive', `upload failed: ${(err as Error).message}`);
  }
  // Informational (the limit was enforced above): failing to record it does not fail the import.
  await setSnapshotTreeBytes(ctx.db, snapshotId, v.value.treeBytes).catch((err) => ctx.log.warn({ err, snapshotId }, 'could not record the import tree size'));
  const op = await submitOperation(ctx, sandbox, 'import', { sandboxId: id, snapshotId, name, stagingKey }, { snapshotId });
  return { snapshot, op };
}
