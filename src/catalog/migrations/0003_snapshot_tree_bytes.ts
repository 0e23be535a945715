import { sql, type Kysely } from 'kysely';

/**
 * The logical size of a snapshot: the bytes of the files its tree expands to, which is what a
 * restore writes. size_bytes stays the stored (compressed) size. Null where it is not known.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`alter table snapshots add column tree_bytes bigint`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table snapshots drop column tree_bytes`.execute(db);
}
