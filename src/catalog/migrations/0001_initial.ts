import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('accounts')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('api_key_hash', 'text', (c) => c.notNull().unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('sandboxes')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('account_id', 'text', (c) => c.notNull().references('accounts.id'))
    .addColumn('template', 'text', (c) => c.notNull())
    .addColumn('cpu', 'integer', (c) => c.notNull())
    .addColumn('memory_mb', 'integer', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull().check(sql`state in ('creating','running','paused','deleted')`))
    .addColumn('host_id', 'text', (c) => c.notNull())
    .addColumn('idle_timeout_s', 'integer', (c) => c.notNull())
    .addColumn('source_snapshot_id', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('last_active_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('sandboxes_account_idx').on('sandboxes').columns(['account_id', 'created_at']).execute();

  await db.schema
    .createTable('snapshots')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('account_id', 'text', (c) => c.notNull().references('accounts.id'))
    .addColumn('sandbox_id', 'text', (c) => c.notNull().references('sandboxes.id'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('manual','auto')`))
    .addColumn('state', 'text', (c) =>
      c.notNull().check(sql`state in ('pending','ready','failed','deleting','deleted')`),
    )
    .addColumn('object_key', 'text', (c) => c.notNull())
    .addColumn('size_bytes', 'bigint')
    .addColumn('sha256', 'text')
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  // Names are unique among the snapshots a sandbox still has; failed and deleted ones free their name.
  await sql`create unique index snapshots_live_name_idx on snapshots (sandbox_id, name)
            where state in ('pending','ready','deleting')`.execute(db);
  await db.schema.createIndex('snapshots_sandbox_idx').on('snapshots').columns(['sandbox_id', 'created_at']).execute();
  await db.schema.createIndex('snapshots_account_idx').on('snapshots').columns(['account_id', 'state']).execute();

  await db.schema
    .createTable('operations')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('account_id', 'text', (c) => c.notNull().references('accounts.id'))
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) =>
      c.notNull().check(sql`status in ('running','succeeded','failed','cancelled')`),
    )
    .addColumn('sandbox_id', 'text')
    .addColumn('snapshot_id', 'text')
    .addColumn('step', 'text', (c) => c.notNull())
    .addColumn('bytes_done', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('bytes_total', 'bigint')
    .addColumn('input', 'jsonb', (c) => c.notNull())
    .addColumn('result', 'jsonb')
    .addColumn('error_code', 'text')
    .addColumn('error_message', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('finished_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('operations_account_idx').on('operations').columns(['account_id', 'created_at']).execute();

  await db.schema
    .createTable('idempotency_keys')
    .addColumn('account_id', 'text', (c) => c.notNull().references('accounts.id'))
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('request_hash', 'text', (c) => c.notNull())
    .addColumn('status_code', 'integer')
    .addColumn('response', 'jsonb')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('idempotency_keys_pk', ['account_id', 'key'])
    .execute();

  await db.schema
    .createTable('sessions')
    .addColumn('id', 'serial', (c) => c.primaryKey())
    .addColumn('sandbox_id', 'text', (c) => c.notNull().references('sandboxes.id'))
    .addColumn('command', 'jsonb', (c) => c.notNull())
    .addColumn('background', 'boolean', (c) => c.notNull())
    .addColumn('pid', 'integer')
    .addColumn('exit_code', 'integer')
    .addColumn('started_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('finished_at', 'timestamptz')
    .execute();
  await db.schema.createIndex('sessions_sandbox_idx').on('sessions').columns(['sandbox_id', 'id']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['sessions', 'idempotency_keys', 'operations', 'snapshots', 'sandboxes', 'accounts']) {
    await db.schema.dropTable(t).execute();
  }
}
