import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import type { AppContext } from '../../service/context.js';
import { accountOf } from '../auth.js';
import { sandboxIdParam } from './sandboxes.js';
import { getAccountSandbox } from '../../catalog/sandboxes.js';
import { recordActivity } from '../../service/operations.js';
import { CagedError } from '../../shared/errors.js';

/**
 * Raw file access inside a sandbox. Registered in its own scope whose only body parser passes the
 * request stream through, so uploads are streamed to disk whatever their content type.
 */
export async function fileRoutes(app: FastifyInstance, ctx: AppContext) {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));

  const target = async (req: FastifyRequest) => {
    const params = req.params as { id: string; '*': string };
    const { id } = sandboxIdParam.parse({ id: params.id });
    const path = params['*'];
    if (!path) throw new CagedError('invalid_input', 'a file path is required after /files/');
    const sandbox = await getAccountSandbox(ctx.db, accountOf(req).id, id);
    return { sandbox, path };
  };

  app.put('/v1/sandboxes/:id/files/*', async (req, reply) => {
    const { sandbox, path } = await target(req);
    if (sandbox.state === 'creating') throw new CagedError('invalid_state', `sandbox ${sandbox.id} is still being created`);
    const body = (req.body as Readable | undefined) ?? req.raw;
    await ctx.runtime.writeFile(sandbox.id, path, body);
    await recordActivity(ctx, sandbox);
    return reply.status(204).send();
  });

  app.get('/v1/sandboxes/:id/files/*', async (req, reply) => {
    const { sandbox, path } = await target(req);
    const stream = await ctx.runtime.readFile(sandbox.id, path);
    await recordActivity(ctx, sandbox);
    return reply.type('application/octet-stream').send(stream);
  });

  app.delete('/v1/sandboxes/:id/files/*', async (req, reply) => {
    const { sandbox, path } = await target(req);
    await ctx.runtime.deleteFile(sandbox.id, path);
    await recordActivity(ctx, sandbox);
    return reply.status(204).send();
  });
}
