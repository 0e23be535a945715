import type { FastifyRequest } from 'fastify';
import type { AccountRow } from '../catalog/schema.js';
import type { AppContext } from '../service/context.js';
import { findAccountByKey } from '../catalog/accounts.js';
import { CagedError } from '../shared/errors.js';
import { safeEqual } from '../shared/ids.js';

declare module 'fastify' {
  interface FastifyRequest {
    account?: AccountRow;
  }
}

export function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  const m = h ? /^Bearer\s+(\S+)$/i.exec(h) : null;
  return m?.[1];
}

export function isAdmin(ctx: AppContext, req: FastifyRequest): boolean {
  const token = bearer(req);
  return !!token && !!ctx.config.adminToken && safeEqual(token, ctx.config.adminToken);
}

export async function requireAccount(ctx: AppContext, req: FastifyRequest): Promise<AccountRow> {
  const token = bearer(req);
  if (!token) throw new CagedError('unauthorized', 'missing Authorization: Bearer <api key>');
  if (!token.startsWith('caged_sk_')) throw new CagedError('unauthorized', 'invalid API key');
  const account = await findAccountByKey(ctx.db, token);
  if (!account) throw new CagedError('unauthorized', 'invalid API key');
  req.account = account;
  return account;
}

export function requireAdmin(ctx: AppContext, req: FastifyRequest): void {
  if (!ctx.config.adminToken) throw new CagedError('unauthorized', 'the operator token is not configured (CAGED_ADMIN_TOKEN)');
  if (!isAdmin(ctx, req)) throw new CagedError('unauthorized', 'invalid operator token');
}

export function accountOf(req: FastifyRequest): AccountRow {
  if (!req.account) throw new CagedError('unauthorized', 'not authenticated');
  return req.account;
}
