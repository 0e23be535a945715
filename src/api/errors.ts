import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ZodError } from 'zod';
import { CagedError, ERROR_STATUS, isErrorCode } from '../shared/errors.js';
import { scrubSignedUrls } from './input-guards.js';
import { isCatalogUnavailable } from '../catalog/unavailable.js';
import { GRPC_DEADLINE_EXCEEDED, GRPC_UNAVAILABLE, grpcStatus } from '../service/workflow-errors.js';

export function sendError(reply: FastifyReply, code: keyof typeof ERROR_STATUS, message: string, details?: Record<string, unknown>) {
  return reply.status(ERROR_STATUS[code]).send({ error: { code, message, ...(details ? { details } : {}) } });
}

/** The server's own file paths (and signed URLs' credentials) stay in its log, not in answers to clients. */
function withoutServerPaths(message: string): string {
  return scrubSignedUrls(message).replace(/(^|[\s'"(=,])\/[^\s'"),]+/g, '$1<path>');
}

/** Every failure leaves as {"error":{"code","message"}}; a bare 500 never does. */
export function errorHandler(err: FastifyError | Error, req: FastifyRequest, reply: FastifyReply) {
  if (err instanceof CagedError) return sendError(reply, err.code, err.message, err.details);
  if (err instanceof ZodError) {
    const msg = err.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
    return sendError(reply, 'invalid_input', msg);
  }
  const fe = err as FastifyError;
  if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return sendError(reply, 'too_large', 'request body is too large');
  if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return sendError(reply, 'invalid_input', fe.message);
  }
  if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
    return sendError(reply, fe.statusCode === 404 ? 'not_found' : 'invalid_input', fe.message);
  }
  const code = (err as { code?: unknown }).code;
  if (isErrorCode(code)) return sendError(reply, code, err.message);
  const down = unavailableDependency(err);
  if (down) {
    req.log.warn({ err }, `${down} unavailable`);
    return sendError(reply, 'unavailable', `the ${down} is unavailable; retry shortly`);
  }
  req.log.error({ err }, 'request failed');
  return sendError(reply, 'internal', `internal error: ${withoutServerPaths(err.message)} (request ${req.id})`);
}

/**
 * Which dependency a failure says is down: the catalog (PostgreSQL refused, reset or shut the
 * connection) or Temporal (gRPC UNAVAILABLE / DEADLINE_EXCEEDED). Both heal by themselves, so the
 * client gets 503 `unavailable` and may retry, not a 500.
 */
export function unavailableDependency(err: unknown): 'catalog' | 'workflow service' | undefined {
  if (isCatalogUnavailable(err)) return 'catalog';
  const status = grpcStatus(err);
  if (status === GRPC_UNAVAILABLE || status === GRPC_DEADLINE_EXCEEDED) return 'workflow service';
  return undefined;
}
