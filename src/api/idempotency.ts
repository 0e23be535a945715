import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { AppContext } from '../service/context.js';
import { claimIdempotencyKey, completeIdempotencyKey, releaseIdempotencyKey } from '../catalog/idempotency.js';
import { accountOf } from './auth.js';
import { CagedError } from '../shared/errors.js';

/**
 * Wraps a POST handler: with an Idempotency-Key header, a repeat of the same request returns the
 * first response (the same operation) instead of starting a second one.
 */
export function idempotent(ctx: AppContext, handler: (req: FastifyRequest, reply: FastifyReply) => Promise<{ status: number; body: unknown }>) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    const key = req.headers['idempotency-key'];
    if (key === undefined) {
      const out = await handler(req, reply);
      return reply.status(out.status).send(out.body);
    }
    if (typeof key !== 'string' || !/^[\x21-\x7e]{1,255}$/.test(key)) {
      throw new CagedError('invalid_input', 'Idempotency-Key must be 1-255 printable ASCII characters');
    }
    const account = accountOf(req);
    let requestText: string;
    try {
      requestText = `${req.method} ${req.routeOptions.url ?? req.url} ${JSON.stringify(req.params)} ${JSON.stringify(req.query)} ${JSON.stringify(req.body ?? null)}`;
    } catch {
      // The JSON parser bounds the depth; anything that still cannot be stringified is bad input, not a 500.
      throw new CagedError('invalid_input', 'the request body cannot be used with an Idempotency-Key');
    }
    const requestHash = createHash('sha256').update(requestText).digest('hex');
    const claim = await claimIdempotencyKey(ctx.db, account.id, key, requestHash);
    if (claim.kind === 'replay') {
      return reply.status(claim.statusCode).header('idempotent-replayed', 'true').send(claim.response);
    }
    try {
      const out = await handler(req, reply);
      await completeIdempotencyKey(ctx.db, account.id, key, out.status, out.body);
      return reply.status(out.status).send(out.body);
    } catch (err) {
      await releaseIdempotencyKey(ctx.db, account.id, key).catch(() => {});
      throw err;
    }
  };
}
