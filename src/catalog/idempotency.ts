import type { CatalogDb } from './db.js';
import { CagedError } from '../shared/errors.js';

export type IdempotencyClaim =
  | { kind: 'new' }
  | { kind: 'replay'; statusCode: number; response: unknown };

/**
 * Claims (account, key) for a request. A second request with the same key gets the first one's
 * response; the same key with a different request is a conflict; a key whose first request is
 * still in flight is a conflict too (the client retries).
 */
export async function claimIdempotencyKey(db: CatalogDb, accountId: string, key: string, requestHash: string): Promise<IdempotencyClaim> {
  const inserted = await db
    .insertInto('idempotency_keys')
    .values({ account_id: accountId, key, request_hash: requestHash })
    .onConflict((oc) => oc.columns(['account_id', 'key']).doNothing())
    .returning('key')
    .executeTakeFirst();
  if (inserted) return { kind: 'new' };
  const row = await db.selectFrom('idempotency_keys').selectAll().where('account_id', '=', accountId).where('key', '=', key).executeTakeFirstOrThrow();
  if (row.request_hash !== requestHash) {
    throw new CagedError('conflict', 'this Idempotency-Key was used with a different request');
  }
  if (row.status_code === null) throw new CagedError('conflict', 'a request with this Idempotency-Key is still in progress');
  return { kind: 'replay', statusCode: row.status_code, response: row.response };
}

export async function completeIdempotencyKey(db: CatalogDb, accountId: string, key: string, statusCode: number, response: unknown): Promise<void> {
  await db
    .updateTable('idempotency_keys')
    .set({ status_code: statusCode, response: JSON.stringify(response) })
    .where('account_id', '=', accountId)
    .where('key', '=', key)
    .execute();
}

/** A request that failed does not hold its key: the client may retry with it. */
export async function releaseIdempotencyKey(db: CatalogDb, accountId: string, key: string): Promise<void> {
  await db.deleteFrom('idempotency_keys').where('account_id', '=', accountId).where('key', '=', key).where('status_code', 'is', null).execute();
}
