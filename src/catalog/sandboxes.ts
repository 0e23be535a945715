import { sql } from 'kysely';
import type { CatalogDb } from './db.js';
import type { SandboxRow, SandboxState } from './schema.js';
import { CagedError } from '../shared/errors.js';

export interface NewSandbox {
  id: string;
  accountId: string;
  template: string;
  cpu: number;
  memoryMb: number;
  hostId: string;
  idleTimeoutSeconds: number;
  state?: SandboxState;
  sourceSnapshotId?: string | null;
}

/**
 * Inserts a sandbox row (idempotent by id). With maxPerAccount, the account's live sandboxes are
 * counted under a lock on the account's row, so concurrent creates and forks cannot pass the cap
 * together; at the cap the answer is 422 limit_exceeded (sandboxes_per_account).
 */
export async function insertSandbox(db: CatalogDb, s: NewSandbox, maxPerAccount?: number): Promise<SandboxRow> {
  if (maxPerAccount === undefined) return insertSandboxRow(db, s);
  return db.transaction().execute(async (tx) => {
    await tx.selectFrom('accounts').select('id').where('id', '=', s.accountId).forUpdate().executeTakeFirst();
    const existing = await tx.selectFrom('sandboxes').selectAll().where('id', '=', s.id).executeTakeFirst();
    if (existing) return existing;
    const { live } = await tx
      .selectFrom('sandboxes')
      .select((eb) => eb.fn.countAll<string>().as('live'))
      .where('account_id', '=', s.accountId)
      .where('state', '!=', 'deleted')
      .executeTakeFirstOrThrow();
    if (Number(live) >= maxPerAccount) {
      throw new CagedError(
        'limit_exceeded',
        `limit sandboxes_per_account exceeded: the account has ${Number(live)} of ${maxPerAccount} sandboxes; delete one first`,
        { limit: 'sandboxes_per_account', max: maxPerAccount },
      );
    }
    return insertSandboxRow(tx as unknown as CatalogDb, s);
  });
}

async function insertSandboxRow(db: CatalogDb, s: NewSandbox): Promise<SandboxRow> {
  return db
    .insertInto('sandboxes')
    .values({
      id: s.id,
      account_id: s.accountId,
      template: s.template,
      cpu: s.cpu,
      memory_mb: s.memoryMb,
      host_id: s.hostId,
      idle_timeout_s: s.idleTimeoutSeconds,
      state: s.state ?? 'creating',
      source_snapshot_id: s.sourceSnapshotId ?? null,
    })
    .onConflict((oc) => oc.column('id').doNothing())
    .returningAll()
    .executeTakeFirst()
    .then(async (row) => row ?? (await getSandbox(db, s.id))!);
}

export async function getSandbox(db: CatalogDb, id: string): Promise<SandboxRow | undefined> {
  return db.selectFrom('sandboxes').selectAll().where('id', '=', id).executeTakeFirst();
}

/** A live sandbox of this account, or not_found: another account's sandbox is indistinguishable from none. */
export async function getAccountSandbox(db: CatalogDb, accountId: string, id: string): Promise<SandboxRow> {
  const row = await getSandbox(db, id);
  if (!row || row.account_id !== accountId || row.state === 'deleted') throw new CagedError('not_found', `sandbox ${id} not found`);
  return row;
}

export async function listSandboxes(db: CatalogDb, accountId: string): Promise<SandboxRow[]> {
  return db
    .selectFrom('sandboxes')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('state', '!=', 'deleted')
    .orderBy('seq', 'desc')
    .execute();
}

export async function setSandboxState(db: CatalogDb, id: string, state: SandboxState): Promise<void> {
  await db.updateTable('sandboxes').set({ state }).where('id', '=', id).execute();
}

export async function touchSandbox(db: CatalogDb, id: string): Promise<void> {
  await db.updateTable('sandboxes').set({ last_active_at: sql`now()` }).where('id', '=', id).execute();
}

/** The sandbox a snapshot was taken of, deleted or not: operations on the snapshot run on its workflow and host. */
export async function getSnapshotSandbox(db: CatalogDb, snap: { id: string; sandbox_id: string }): Promise<SandboxRow> {
  const row = await getSandbox(db, snap.sandbox_id);
  if (!row) throw new CagedError('not_found', `the sandbox of snapshot ${snap.id} is gone`);
  return row;
}
