import type { FastifyInstance } from 'fastify';
import { operationDto } from '../dto.js';
import { z } from 'zod';
import type { AppContext } from '../../service/context.js';
import { accountOf } from '../auth.js';
import { getAccountOperation, listOperations } from '../../catalog/operations.js';
import { reconcileOperation } from '../../service/reconcile.js';
import { cancelOperation } from '../../service/operations.js';
import { retryOperation } from '../../service/retry.js';
import { idempotent } from '../idempotency.js';
import { OPERATION_TYPES } from '../../workflows/registry.js';
import { CagedError } from '../../shared/errors.js';
import { OPERATION_ID_RE, SANDBOX_ID_RE } from '../../shared/ids.js';

const listQuery = z
  .object({
    sandbox_id: z.string().regex(SANDBOX_ID_RE, 'sandbox_id must be a sandbox id').optional(),
    status: z.enum(['running', 'succeeded', 'failed', 'cancelled']).optional(),
    type: z.enum(OPERATION_TYPES).optional(),
    limit: z.coerce.number().int().min(1).max(500).optional(),
  })
  .strict();
const idParam = z.object({ id: z.string().regex(OPERATION_ID_RE, 'not an operation id') });

export function operationRoutes(app: FastifyInstance, ctx: AppContext) {
  app.get('/v1/operations', async (req) => {
    const q = listQuery.parse(req.query);
    const rows = await listOperations(ctx.db, accountOf(req).id, { sandboxId: q.sandbox_id, status: q.status, type: q.type, limit: q.limit });
    return { operations: rows.map(operationDto) };
  });

  app.get('/v1/operations/:id', async (req) => {
    const { id } = idParam.parse(req.params);
    const op = await getAccountOperation(ctx.db, accountOf(req).id, id);
    return operationDto(await reconcileOperation(ctx, op));
  });

  app.post('/v1/operations/:id/cancel', async (req, reply) => {
    const { id } = idParam.parse(req.params);
    const op = await getAccountOperation(ctx.db, accountOf(req).id, id);
    if (op.status !== 'running') throw new CagedError('invalid_state', `operation ${id} is already ${op.status}`);
    if (!op.sandbox_id) throw new CagedError('invalid_state', `operation ${id} cannot be cancelled`);
    await cancelOperation(ctx, op.sandbox_id, id);
    // The operation as it stands when asked: still running, since cancelling is asynchronous.
    return reply.status(202).send({ operation: operationDto(op) });
  });

  app.post(
    '/v1/operations/:id/retry',
    idempotent(ctx, async (req) => {
      const { id } = idParam.parse(req.params);
      const op = await getAccountOperation(ctx.db, accountOf(req).id, id);
      const operation = await retryOperation(ctx, op);
      return { status: 202, body: { operation: operationDto(operation) } };
    }),
  );
}
