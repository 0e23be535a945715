import type { FastifyInstance } from 'fastify';
import { PassThrough, type Readable } from 'node:stream';
import { z } from 'zod';
import type { AppContext } from '../../service/context.js';
import { accountOf } from '../auth.js';
import { idempotent } from '../idempotency.js';
import { sandboxIdParam } from './sandboxes.js';
import { snapshotIdParam } from './snapshots.js';
import { getAccountSandbox, getSandbox } from '../../catalog/sandboxes.js';
import { discardReservation, getAccountSnapshot, reserveSnapshot, snapshotDto, SNAPSHOT_NAME_RE } from '../../catalog/snapshots.js';
import { operationDto } from '../../catalog/operations.js';
import { submitOperation } from '../../service/operations.js';
import { snapshotObjectKey } from '../../workflows/snapshot-steps.js';
import { validateTarGz } from '../../archive/validate-import.js';
import { checkDownload } from '../../shared/signed-url.js';
import { newSnapshotId, randomSuffix, SANDBOX_ID_RE } from '../../shared/ids.js';
import { CagedError } from '../../shared/errors.js';

const restoreBody = z.object({ to: z.string().regex(SANDBOX_ID_RE, 'to must be a sandbox id').optional() }).strict();
const importQuery = z.object({ name: z.string().regex(SNAPSHOT_NAME_RE, 'name must be 1-63 characters of A-Z a-z 0-9 . _ -') }).strict();

export function snapshotTransferRoutes(app: FastifyInstance, ctx: AppContext) {
  app.post(
    '/v1/snapshots/:id/restore',
    idempotent(ctx, async (req) => {
      const { id } = snapshotIdParam.parse(req.params);
      const { to } = restoreBody.parse(req.body ?? {});
      const account = accountOf(req);
      const snap = await getAccountSnapshot(ctx.db, account.id, id);
      if (snap.state !== 'ready') throw new CagedError('invalid_state', `snapshot ${id} is ${snap.state}, not ready`);
      const target = await getAccountSandbox(ctx.db, account.id, to ?? snap.sandbox_id);
      if (target.state === 'creating') throw new CagedError('invalid_state', `sandbox ${target.id} is still being created`);
      const op = await submitOperation(ctx, target, 'restore', { snapshotId: id, sourceSandboxId: snap.sandbox_id, targetSandboxId: target.id }, { snapshotId: id });
      return { status: 202, body: { operation: operationDto(op) } };
    }),
  );

  app.post(
    '/v1/snapshots/:id/export',
    idempotent(ctx, async (req) => {
      const { id } = snapshotIdParam.parse(req.params);
      const snap = await getAccountSnapshot(ctx.db, accountOf(req).id, id);
      if (snap.state !== 'ready') throw new CagedError('invalid_state', `snapshot ${id} is ${snap.state}, not ready`);
      const sandbox = (await getSandbox(ctx.db, snap.sandbox_id))!;
      const op = await submitOperation(ctx, sandbox, 'export', { snapshotId: id, sandboxId: sandbox.id }, { snapshotId: id });
      return { status: 202, body: { operation: operationDto(op) } };
    }),
  );

  // Signed download links for stores that cannot presign: the signature is the credential.
  app.get('/v1/downloads/*', async (req, reply) => {
    const key = (req.params as { '*': string })['*'];
    const q = req.query as { expires?: string; sig?: string };
    if (!ctx.config.urlSecret) throw new CagedError('forbidden', 'signed downloads are not configured');
    const check = checkDownload(ctx.config.urlSecret, key, q.expires, q.sig);
    if (check === 'expired') throw new CagedError('url_expired', 'this download URL has expired; export the snapshot again');
    if (check !== 'ok') throw new CagedError('forbidden', 'invalid download signature');
    const info = await ctx.store.head(key);
    if (!info) throw new CagedError('not_found', 'the exported archive no longer exists');
    const body = await ctx.store.get(key);
    return reply
      .header('content-length', info.size)
      .header('content-disposition', `attachment; filename="${key.split('/').pop()}"`)
      .type('application/gzip')
      .send(body);
  });
}

/**
 * Import: the body is streamed once, into the store under a staging key and through the validator
 * at the same time. Only a valid archive becomes a snapshot; otherwise the upload is removed and
 * nothing is stored.
 */
export async function importRoutes(app: FastifyInstance, ctx: AppContext) {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
  app.post('/v1/sandboxes/:id/snapshots/import', async (req, reply) => {
    const { id } = sandboxIdParam.parse(req.params);
    const { name } = importQuery.parse(req.query);
    const sandbox = await getAccountSandbox(ctx.db, accountOf(req).id, id);
    const limits = ctx.config.limits;
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > limits.maxSnapshotBytes) {
      throw new CagedError('limit_exceeded', `limit snapshot_bytes exceeded: the upload is ${declared} bytes, over ${limits.maxSnapshotBytes}`, { limit: 'snapshot_bytes' });
    }
    const snapshotId = newSnapshotId();
    // Reserved first, so a taken name or a full sandbox is refused before any byte is stored.
    const { snapshot } = await reserveSnapshot(
      ctx.db,
      { id: snapshotId, accountId: sandbox.account_id, sandboxId: id, name, kind: 'manual', objectKey: snapshotObjectKey(id, snapshotId) },
      limits,
    );
    const stagingKey = `imports/${snapshotId}-${randomSuffix(6)}.tar.gz`;
    const source = (req.body as Readable | undefined) ?? req.raw;
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
      { maxEntries: limits.importMaxEntries, maxPathLength: limits.importMaxPathLength, maxUncompressedBytes: limits.importMaxUncompressedBytes, maxCompressedBytes: limits.maxSnapshotBytes },
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
    const op = await submitOperation(ctx, sandbox, 'import', { sandboxId: id, snapshotId, name, stagingKey }, { snapshotId });
    return reply.status(202).send({ snapshot: snapshotDto(snapshot), operation: operationDto(op) });
  });
}
