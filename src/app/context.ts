import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { openCatalog } from '../catalog/db.js';
import { createBlobStore } from '../storage/index.js';
import { LocalSandboxRuntime } from '../sandbox/local-runtime.js';
import { PROJECT_ROOT } from '../runtime/tools.js';
import type { AppContext } from '../service/context.js';
import type { ActivityDeps } from '../activities/deps.js';

export function createRuntime(config: Config) {
  return new LocalSandboxRuntime({ baseDir: path.join(config.dataDir, 'sandboxes'), templatesDir: path.join(PROJECT_ROOT, 'templates') });
}

/** Opens every adapter the configuration names: catalog, store, runtime and Temporal. */
export async function createAppContext(config: Config, log: Logger, temporalAddress: string): Promise<AppContext & { close(): Promise<void>; connection: Connection }> {
  const db = await openCatalog({
    databaseUrl: config.databaseUrl,
    pgliteDir: path.join(config.dataDir, 'catalog'),
    onConnectionError: (err) => log.warn({ err: err.message }, 'catalog connection error; the pool reconnects'),
  });
  const storeLog = log.child({ component: 'store' });
  const store = createBlobStore({
    dataDir: config.dataDir,
    s3: config.s3,
    storageRetryMs: config.storageRetryMs,
    onRetry: (info) => storeLog.warn({ attempt: info.attempt, error: info.error, next_at: info.nextAt.toISOString(), request: info.what }, 'object store request failed; retrying'),
  });
  const connection = await Connection.connect({ address: temporalAddress });
  const temporal = new Client({ connection, namespace: config.temporal.namespace });
  return {
    config,
    db,
    store,
    runtime: createRuntime(config),
    temporal,
    log,
    connection,
    async close() {
      await connection.close().catch(() => {});
      await store.close?.().catch(() => {});
      await db.destroy().catch(() => {});
    },
  };
}

/** The activities' dependencies, from the same adapters the API uses. */
export function activityDeps(ctx: AppContext): ActivityDeps {
  const { config } = ctx;
  return {
    db: ctx.db,
    store: ctx.store,
    runtime: ctx.runtime,
    limits: config.limits,
    workDir: path.join(config.dataDir, 'work'),
    packCacheBytes: config.packCacheBytes,
    gcGraceSeconds: config.gc.graceSeconds,
    log: ctx.log.child({ component: 'worker' }),
    urls: config.urlSecret ? { secret: config.urlSecret, publicUrl: config.publicUrl } : undefined,
  };
}
