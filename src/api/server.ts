import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { AppContext } from '../service/context.js';
import { errorHandler, sendError } from './errors.js';
import { requireAccount } from './auth.js';
import { sandboxRoutes } from './routes/sandboxes.js';
import { fileRoutes } from './routes/files.js';
import { snapshotRoutes } from './routes/snapshots.js';
import { operationRoutes } from './routes/operations.js';
import { adminRoutes } from './routes/admin.js';
import { importRoutes, snapshotTransferRoutes } from './routes/snapshot-transfers.js';
import { idleRoutes } from './routes/idle.js';

/** Routes that authenticate some other way: the operator token, or no credential at all. */
const OWN_AUTH = [/^\/healthz$/, /^\/v1\/admin\//, /^\/v1\/downloads\//, /^\/v1\/sandboxes\/[^/]+\/idle-timeout$/];

export async function buildServer(ctx: AppContext): Promise<FastifyInstance> {
  const app = Fastify({ loggerInstance: ctx.log.child({ component: 'api' }) as FastifyBaseLogger, bodyLimit: 1024 * 1024, disableRequestLogging: false });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => sendError(reply, 'not_found', `no route for ${req.method} ${req.url.split('?')[0]}`));
  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?')[0]!;
    if (OWN_AUTH.some((re) => re.test(path))) return;
    if (path.startsWith('/v1/')) await requireAccount(ctx, req);
  });

  app.get('/healthz', async () => ({ ok: true }));
  sandboxRoutes(app, ctx);
  snapshotRoutes(app, ctx);
  operationRoutes(app, ctx);
  adminRoutes(app, ctx);
  snapshotTransferRoutes(app, ctx);
  idleRoutes(app, ctx);
  await app.register(async (scope) => importRoutes(scope, ctx));
  await app.register(async (scope) => fileRoutes(scope, ctx));
  return app;
}
