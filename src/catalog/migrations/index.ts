import type { Migration } from 'kysely';
import * as m0001 from './0001_initial.js';
import * as m0002 from './0002_insertion_order.js';
import * as m0003 from './0003_snapshot_tree_bytes.js';
import * as m0004 from './0004_operation_retrying.js';
import * as m0005 from './0005_chunk_store.js';

/** Ordered by name; Kysely's Migrator runs the ones a database has not seen yet. */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
  '0002_insertion_order': m0002,
  '0003_snapshot_tree_bytes': m0003,
  '0004_operation_retrying': m0004,
  '0005_chunk_store': m0005,
};
