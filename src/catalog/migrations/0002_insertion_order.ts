import { sql, type Kysely } from 'kysely';

/**
 * "Newest first" needs a total order: rows inserted within one clock tick share created_at
 * (PGlite's clock is coarse), so lists order by an insertion sequence instead.
 */
export async function up(db: Kysely<any>): Promise<void> {
  for (const table of ['sandboxes', 'snapshots', 'operations']) {
    await sql`alter table ${sql.table(table)} add column seq bigserial`.execute(db);
    await sql`create index ${sql.raw(`${table}_seq_idx`)} on ${sql.table(table)} (seq)`.execute(db);
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ['sandboxes', 'snapshots', 'operations']) {
    await sql`alter table ${sql.table(table)} drop column seq`.execute(db);
  }
}
