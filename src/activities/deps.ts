import type { Logger } from 'pino';
import type { CatalogDb } from '../catalog/db.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import type { Limits } from '../config.js';

/** What activities are built over; tests and the worker inject real adapters. */
export interface ActivityDeps {
  db: CatalogDb;
  store: BlobStore;
  runtime: SandboxRuntime;
  limits: Limits;
  log: Logger;
  /** For download URLs of stores that cannot presign (fs): the API's public URL and the HMAC secret it shares. */
  urls?: { secret: string; publicUrl: string };
  /**
   * Called at named points inside data-moving activities ("upload:progress", "restore:extracting", …).
   * Tests arm it to fail a step on purpose and prove the rollback; production leaves it unset.
   */
  /** Host-local directory for the pack cache and scratch trees (default: a folder in the system's temp dir). */
  workDir?: string;
  /** The pack cache's budget for remote stores (CAGED_PACK_CACHE_BYTES). */
  packCacheBytes?: number;
  /** The shortest a condemned pack waits before the collector deletes it (CAGED_GC_GRACE_S). */
  gcGraceSeconds?: number;
  faultHook?: (point: string, info: { sandboxId?: string; snapshotId?: string; bytes?: number }) => void | Promise<void>;
}
