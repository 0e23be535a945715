import { sql } from 'kysely';
import type { CatalogDb } from './db.js';
import type { OperationRow, OperationStatus, RetryingJson } from './schema.js';
import { CagedError } from '../shared/errors.js';

export interface NewOperationRecord {
  id: string;
  accountId: string;
  type: string;
  sandboxId?: string | null;
  snapshotId?: string | null;
  input: unknown;
  step?: string;
}

export async function insertOperation(db: CatalogDb, op: NewOperationRecord): Promise<OperationRow> {
  await db
    .insertInto('operations')
    .values({
      id: op.id,
      account_id: op.accountId,
      type: op.type,
      status: 'running',
      sandbox_id: op.sandboxId ?? null,
      snapshot_id: op.snapshotId ?? null,
      step: op.step ?? 'queued',
      bytes_done: 0,
      input: JSON.stringify(op.input),
    })
    .onConflict((oc) => oc.column('id').doNothing())
    .execute();
  return (await getOperation(db, op.id))!;
}

export async function getOperation(db: CatalogDb, id: string): Promise<OperationRow | undefined> {
  return db.selectFrom('operations').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function getAccountOperation(db: CatalogDb, accountId: string, id: string): Promise<OperationRow> {
  const row = await getOperation(db, id);
  if (!row || row.account_id !== accountId) throw new CagedError('not_found', `operation ${id} not found`);
  return row;
}

export async function listOperations(
  db: CatalogDb,
  accountId: string,
  f: { sandboxId?: string; status?: OperationStatus; type?: string; limit?: number },
): Promise<OperationRow[]> {
  let q = db.selectFrom('operations').selectAll().where('account_id', '=', accountId);
  if (f.sandboxId) q = q.where('sandbox_id', '=', f.sandboxId);
  if (f.status) q = q.where('status', '=', f.status);
  if (f.type) q = q.where('type', '=', f.type);
  return q.orderBy('seq', 'desc').limit(f.limit ?? 100).execute();
}

/** Progress only moves a running operation; a finished one keeps its final record. */
export async function setOperationProgress(
  db: CatalogDb,
  id: string,
  p: { step?: string; bytesDone?: number; bytesTotal?: number | null; retrying?: RetryingJson | null },
): Promise<void> {
  const patch: Record<string, unknown> = { updated_at: sql`now()` };
  if (p.retrying !== undefined) patch.retrying = p.retrying === null ? null : JSON.stringify(p.retrying);
  if (p.step !== undefined) patch.step = p.step;
  if (p.bytesDone !== undefined) patch.bytes_done = p.bytesDone;
  if (p.bytesTotal !== undefined) patch.bytes_total = p.bytesTotal;
  await db.updateTable('operations').set(patch).where('id', '=', id).where('status', '=', 'running').execute();
}

export interface OperationOutcome {
  status: Exclude<OperationStatus, 'running'>;
  result?: unknown;
  error?: { code: string; message: string };
}

/** Idempotent: the first outcome recorded wins. */
export async function finishOperation(db: CatalogDb, id: string, o: OperationOutcome): Promise<void> {
  await db
    .updateTable('operations')
    .set({
      status: o.status,
      step: o.status === 'succeeded' ? 'done' : o.status,
      result: o.result === undefined ? null : JSON.stringify(o.result),
      error_code: o.error?.code ?? null,
      error_message: o.error?.message ?? null,
      finished_at: sql`now()`,
      updated_at: sql`now()`,
    })
    .where('id', '=', id)
    .where('status', '=', 'running')
    .execute();
}

