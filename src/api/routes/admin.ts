import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AppContext } from '../../service/context.js';
import { requireAdmin } from '../auth.js';
import { createAccount } from '../../catalog/accounts.js';

const body = z.object({ name: z.string().trim().min(1).max(100) }).strict();

export function adminRoutes(app: FastifyInstance, ctx: AppContext) {
  app.post('/v1/admin/accounts', async (req, reply) => {
    requireAdmin(ctx, req);
    const { name } = body.parse(req.body ?? {});
    const { account, apiKey } = await createAccount(ctx.db, name);
    return reply.status(201).send({ id: account.id, name: account.name, api_key: apiKey });
  });
}
