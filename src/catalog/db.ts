import fs from 'node:fs/promises';
import path from 'node:path';
import { Kysely, Migrator, PostgresDialect, type MigrationResultSet } from 'kysely';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { PGliteDialect } from 'kysely-pglite-dialect';
import type { Database } from './schema.js';
import { migrations } from './migrations/index.js';

export type CatalogDb = Kysely<Database>;

export interface CatalogOptions {
  /** A PostgreSQL connection string; without it, PGlite in `pgliteDir` (or in memory). */
  databaseUrl?: string;
  pgliteDir?: string;
}

/** Opens the catalog and brings its schema up to date. */
export async function openCatalog(opts: CatalogOptions): Promise<CatalogDb> {
  let db: CatalogDb;
  if (opts.databaseUrl) {
    const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: 10 });
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  } else {
    if (opts.pgliteDir) await fs.mkdir(path.dirname(opts.pgliteDir), { recursive: true });
    const pglite = opts.pgliteDir ? new PGlite(opts.pgliteDir) : new PGlite();
    db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
  }
  try {
    await migrateToLatest(db);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return db;
}

export async function migrateToLatest(db: Kysely<any>): Promise<MigrationResultSet> {
  const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } });
  const result = await migrator.migrateToLatest();
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error');
    throw new Error(`catalog migration ${failed?.migrationName ?? '?'} failed: ${String(result.error)}`);
  }
  return result;
}
