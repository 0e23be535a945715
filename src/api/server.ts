import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { AppContext } from '../service/context.js';
import { errorHandler, sendError } from './errors.js';
import { requireAccount } from './auth.js';
import { sandboxRoutes } from './routes/sandboxes.js';
import { fileRoutes } from './routes/files.js';
import { snapshotRoutes } from './routes/snapshots.js';
import { operationRoutes } from './routes/operations.js';
import { operationHistoryRoutes } from './routes/operation-history.js';
import { adminRoutes } from './routes/admin.js';
import { importRoutes, snapshotTransferRoutes } from './routes/snapshot-transfers.js';
import { idleRoutes } from './routes/idle.js';
import { apiLogSerializers, clientErrorHandler, frameworkErrors, installJsonParser, refuseNulInUrl } from './input-guards.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Every route as registered (HEAD twins of GET routes included), for tests that must cover them all. */
    routeList: ReadonlyArray<{ method: string; url: string }>;
  }
}

/** Every request is logged, at debug: at info a normal day's log is about the operations, not each poll. */
class DebugRequestLog extends LogController {
  override incomingRequest(request: FastifyRequest): void {
    request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored');
    else reply.log.debug({ res: reply, responseTime: reply.elapsedTime }, 'request completed');
  }
}

/** Routes that authenticate some other way: the operator token, or no credential at all. */
const OWN_AUTH = new Set(['/healthz', '/v1/admin/accounts', '/v1/admin/verify', '/v1/downloads/*', '/v1/sandboxes/:id/idle-timeout']);

export async function buildServer(ctx: AppContext): Promise<FastifyInstance> {
  const app = Fastify({
    // The serializers keep signed download URLs (their signatures) out of the request log.
    loggerInstance: ctx.log.child({ component: 'api' }, { serializers: apiLogSerializers }) as FastifyBaseLogger,
    bodyLimit: 1024 * 1024,
    logController: new DebugRequestLog(),
    frameworkErrors,
    clientErrorHandler,
  });
  const routeList: { method: string; url: string }[] = [];
  app.decorate('routeList', routeList);
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routeList.push({ method, url: route.url });
  });
  installJsonParser(app);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => sendError(reply, 'not_found', `no route for ${req.method} ${req.url.split('?')[0]}`));
  app.addHook('onRequest', async (req) => {
    // The matched route, not the raw URL: the router decodes %-escapes the raw URL still has.
    const route = req.routeOptions.url;
    if (route === undefined || OWN_AUTH.has(route)) return;
    await requireAccount(ctx, req);
  });
  app.addHook('preValidation', refuseNulInUrl);

  app.get('/healthz', async () => ({ ok: true }));
  sandboxRoutes(app, ctx);
  snapshotRoutes(app, ctx);
  operationRoutes(app, ctx);
  operationHistoryRoutes(app, ctx);
  adminRoutes(app, ctx);
  snapshotTransferRoutes(app, ctx);
  idleRoutes(app, ctx);
  await app.register(async (scope) => importRoutes(scope, ctx));
  await app.register(async (scope) => fileRoutes(scope, ctx));
  return app;
}
