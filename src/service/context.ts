import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { CatalogDb } from '../catalog/db.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import type { Config } from '../config.js';

/** What the API's use cases need: the catalog, the store, the runtime and a Temporal client. */
export interface AppContext {
  config: Config;
  db: CatalogDb;
  store: BlobStore;
  runtime: SandboxRuntime;
  temporal: Client;
  log: Logger;
}
