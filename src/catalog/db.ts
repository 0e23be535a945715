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
  /** Where a pooled connection's error goes (default: stderr). It never takes the process down. */
  onConnectionError?: (err: Error) => void;
}

/**
 * Pool settings that ride out a PostgreSQL restart: a connection attempt gives up after 5 s
 * instead of hanging, TCP keep-alives notice a dead peer, idle connections are dropped after 10 s
 * (so few stale ones are left to fail after an outage), and a failed connection is simply
 * replaced by the next checkout.
 */
export const POOL_SETTINGS = {
  max: 10,
  connectionTimeoutMillis: 5_000,
  idleTimeoutMillis: 10_000,
  keepAlive: true,
  keepAliveInitialDelayMillis: 10_000,
} as const;

/**
 * A pg.Pool whose connection errors are logged, not thrown: without an 'error' listener, a pooled
 * connection that PostgreSQL closes (shutdown, restart, failover) is an unhandled 'error' event
 * that kills the process. Clients get a listener of their own too, for an error that arrives while
 * a client is checked out but between queries; the pool then discards that client on release.
 */
export function createPool(databaseUrl: string, onError: (err: Error) => void = defaultConnectionError): pg.Pool {
  const pool = new pg.Pool({ connectionString: databaseUrl, ...POOL_SETTINGS });
  // An idle client's error reaches both listeners: report it once.
  const seen = new WeakSet<Error>();
  const report = (err: Error) => {
    if (seen.has(err)) return;
    seen.add(err);
    onError(err);
  };
  pool.on('error', report);
  pool.on('connect', (client) => client.on('error', report));
  return pool;
}

function defaultConnectionError(err: Error): void {
  process.stderr.write(`caged: catalog connection error (the pool reconnects): ${err.message}\n`);
}

/** Opens the catalog and brings its schema up to date. */
export async function openCatalog(opts: CatalogOptions): Promise<CatalogDb> {
  let db: CatalogDb;
  if (opts.databaseUrl) {
    const pool = createPool(opts.databaseUrl, opts.onConnectionError);
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
