import { sql } from 'kysely';
import type { CatalogDb } from './db.js';

export async function recordExecStart(db: CatalogDb, sandboxId: string, command: string[], background: boolean): Promise<number> {
  const row = await db
    .insertInto('sessions')
    .values({ sandbox_id: sandboxId, command: JSON.stringify(command), background })
    .returning('id')
    .executeTakeFirstOrThrow();
  return row.id;
}

export async function recordExecEnd(db: CatalogDb, id: number, outcome: { exitCode?: number; pid?: number }): Promise<void> {
  await db
    .updateTable('sessions')
    .set({ exit_code: outcome.exitCode ?? null, pid: outcome.pid ?? null, finished_at: outcome.exitCode === undefined ? null : sql`now()` })
    .where('id', '=', id)
    .execute();
}

export async function listSessions(db: CatalogDb, sandboxId: string) {
  const rows = await db.selectFrom('sessions').selectAll().where('sandbox_id', '=', sandboxId).orderBy('id', 'asc').execute();
  return rows.map((r) => ({
    id: r.id,
    command: r.command,
    background: r.background,
    pid: r.pid,
    exit_code: r.exit_code,
    started_at: r.started_at.toISOString(),
    finished_at: r.finished_at?.toISOString() ?? null,
  }));
}
