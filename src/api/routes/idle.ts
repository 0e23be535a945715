import type { FastifyInstance } from 'fastify';
import { operationDto } from '../dto.js';
import type { AppContext } from '../../service/context.js';
import { isAdmin, requireAccount } from '../auth.js';
import { sandboxIdParam } from './sandboxes.js';
import { getSandbox } from '../../catalog/sandboxes.js';
import { submitOperation } from '../../service/operations.js';
import { CagedError } from '../../shared/errors.js';

/**
 * The hook a sandbox platform calls when it sees a sandbox idle. Duplicates are harmless: pauses
 * run one at a time on the sandbox's workflow, and a pause of a paused sandbox does nothing.
 */
export function idleRoutes(app: FastifyInstance, ctx: AppContext) {
  app.post('/v1/sandboxes/:id/idle-timeout', async (req, reply) => {
    const { id } = sandboxIdParam.parse(req.params);
    const admin = isAdmin(ctx, req);
    const account = admin ? undefined : await requireAccount(ctx, req);
    const sandbox = await getSandbox(ctx.db, id);
    if (!sandbox || sandbox.state === 'deleted' || (account && sandbox.account_id !== account.id)) {
      throw new CagedError('not_found', `sandbox ${id} not found`);
    }
    if (sandbox.state === 'paused') return reply.status(200).send({ operation: null, state: 'paused' });
    const op = await submitOperation(ctx, sandbox, 'pause', { sandboxId: id, reason: 'external_idle_timeout' });
    return reply.status(202).send({ operation: operationDto(op) });
  });
}
