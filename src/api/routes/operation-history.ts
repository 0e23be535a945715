import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AppContext } from '../../service/context.js';
import { accountOf } from '../auth.js';
import { getAccountOperation } from '../../catalog/operations.js';
import { operationHistoryJson, operationTimeline } from '../../service/timeline/operation-timeline.js';

const idParam = z.object({ id: z.string().min(1).max(200) });

/** Why an operation did what it did, from its workflow's history; account-scoped like the other operation routes. */
export function operationHistoryRoutes(app: FastifyInstance, ctx: AppContext) {
  app.get('/v1/operations/:id/timeline', async (req) => {
    const { id } = idParam.parse(req.params);
    return operationTimeline(ctx, await getAccountOperation(ctx.db, accountOf(req).id, id));
  });

  app.get('/v1/operations/:id/history', async (req, reply) => {
    const { id } = idParam.parse(req.params);
    const json = await operationHistoryJson(ctx, await getAccountOperation(ctx.db, accountOf(req).id, id));
    return reply.type('application/json').send(json);
  });
}
