import { sql, type Kysely } from 'kysely';

/** What a running operation is retrying, if anything: { attempt, error, next_at }, shown as progress.retrying. */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table operations add column retrying jsonb`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table operations drop column retrying`.execute(db);
}
