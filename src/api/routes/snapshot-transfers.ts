import type { FastifyInstance } from 'fastify';
import { operationDto, snapshotDto } from '../dto.js';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import type { AppContext } from '../../service/context.js';
import { accountOf } from '../auth.js';
import { idempotent } from '../idempotency.js';
import { sandboxIdParam } from './sandboxes.js';
import { snapshotIdParam } from './snapshots.js';
import { getAccountSandbox, getSnapshotSandbox } from '../../catalog/sandboxes.js';
import { assertReady, getAccountSnapshot, SNAPSHOT_NAME_RE } from '../../catalog/snapshots.js';
import { submitOperation } from '../../service/operations.js';
import { importSnapshot } from '../../service/import.js';
import { checkDownload } from '../../shared/signed-url.js';
import { SANDBOX_ID_RE } from '../../shared/ids.js';
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
      const snap = assertReady(await getAccountSnapshot(ctx.db, account.id, id));
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
      const snap = assertReady(await getAccountSnapshot(ctx.db, accountOf(req).id, id));
      const sandbox = await getSnapshotSandbox(ctx.db, snap);
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

/** Import, in its own scope whose only body parser passes the request stream through. */
export async function importRoutes(app: FastifyInstance, ctx: AppContext) {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
  app.post('/v1/sandboxes/:id/snapshots/import', async (req, reply) => {
    const { id } = sandboxIdParam.parse(req.params);
    const { name } = importQuery.parse(req.query);
    const sandbox = await getAccountSandbox(ctx.db, accountOf(req).id, id);
    const source = (req.body as Readable | undefined) ?? req.raw;
    const { snapshot, op } = await importSnapshot(ctx, sandbox, name, source, Number(req.headers['content-length'] ?? NaN));
    return reply.status(202).send({ snapshot: snapshotDto(snapshot), operation: operationDto(op) });
  });
}
