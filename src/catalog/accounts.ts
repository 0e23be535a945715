import type { CatalogDb } from './db.js';
import type { AccountRow } from './schema.js';
import { hashSecret, newAccountId, newApiKey } from '../shared/ids.js';

export async function createAccount(db: CatalogDb, name: string, apiKey = newApiKey()): Promise<{ account: AccountRow; apiKey: string }> {
  const account = await db
    .insertInto('accounts')
    .values({ id: newAccountId(), name, api_key_hash: hashSecret(apiKey) })
    .returningAll()
    .executeTakeFirstOrThrow();
  return { account, apiKey };
}

/** Keys are stored hashed; a lookup hashes the presented key. */
export async function findAccountByKey(db: CatalogDb, apiKey: string): Promise<AccountRow | undefined> {
  return db.selectFrom('accounts').selectAll().where('api_key_hash', '=', hashSecret(apiKey)).executeTakeFirst();
}

/** The development account of `caged dev`, created once with the configured key. */
export async function ensureAccountWithKey(db: CatalogDb, name: string, apiKey: string): Promise<AccountRow> {
  const existing = await findAccountByKey(db, apiKey);
  if (existing) return existing;
  return (await createAccount(db, name, apiKey)).account;
}
