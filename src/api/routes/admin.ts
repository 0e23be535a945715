import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AppContext } from '../../service/context.js';
import { requireAdmin } from '../auth.js';
import { createAccount } from '../../catalog/accounts.js';
import { verifyStack } from '../../service/verify/index.js';

const body = z.object({ name: z.string().trim().min(1).max(100) }).strict();
const verifyBody = z
  .object({ deep: z.boolean().optional(), repair: z.boolean().optional(), grace_s: z.number().int().min(0).max(30 * 86_400).optional() })
  .strict();

export function adminRoutes(app: FastifyInstance, ctx: AppContext) {
  app.post('/v1/admin/accounts', async (req, reply) => {
    requireAdmin(ctx, req);
    const { name } = body.parse(req.body ?? {});
    const { account, apiKey } = await createAccount(ctx.db, name);
    return reply.status(201).send({ id: account.id, name: account.name, api_key: apiKey });
  });

  /** The consistency check; 200 with the findings whatever they are (an empty list is a clean stack). */
  app.post('/v1/admin/verify', async (req) => {
    requireAdmin(ctx, req);
    const o = verifyBody.parse(req.body ?? {});
    const findings = await verifyStack(ctx, { deep: o.deep, repair: o.repair, graceSeconds: o.grace_s });
    return { ok: findings.every((f) => f.repaired === true), findings };
  });
}
