import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Runtime, DefaultLogger, type Worker } from '@temporalio/worker';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { openCatalog, type CatalogDb } from '../../src/catalog/db.js';
import type { BlobStore, RetryInfo } from '../../src/storage/blob-store.js';
import { createBlobStore } from '../../src/storage/index.js';
import { LocalSandboxRuntime } from '../../src/sandbox/local-runtime.js';
import { createWorkers } from '../../src/app/worker.js';
import { buildServer } from '../../src/api/server.js';
import { loadConfig, type Config, type Limits } from '../../src/config.js';
import type { ActivityDeps } from '../../src/activities/deps.js';
import type { AppContext } from '../../src/service/context.js';
import { PROJECT_ROOT } from '../../src/runtime/tools.js';
import { createAccount } from '../../src/catalog/accounts.js';
import { randomSuffix } from '../../src/shared/ids.js';

let runtimeInstalled = false;
function quietTemporalRuntime() {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  Runtime.install({ logger: new DefaultLogger('WARN') });
}

export interface StackOptions {
  store?: 'fs' | 's3';
  /** Which S3-protocol server of the run (default moto). */
  s3Server?: 'moto' | 's3rver';
  /** Overrides the server's endpoint: a fault proxy in front of it. */
  s3Endpoint?: string;
  /** The store's retry bound (CAGED_STORAGE_RETRY_S); default the configuration's. */
  storageRetryMs?: number;
  /** S3 request idle timeout. */
  s3RequestTimeoutMs?: number;
  onStorageRetry?: (info: RetryInfo) => void;
  catalog?: 'postgres' | 'pglite';
  limits?: Partial<Limits>;
  faultHook?: ActivityDeps['faultHook'];
  config?: Partial<Config>;
  /** Start the API on a free port. */
  api?: boolean;
  /** Start the workers (default true). */
  workers?: boolean;
  /** A PostgreSQL catalog other than the run's shared database (e.g. a private cluster, see private-postgres.ts). */
  databaseUrl?: string;
  /** A Temporal frontend other than the run's shared dev server. */
  temporalAddress?: string;
}

export interface TestStack {
  dir: string;
  db: CatalogDb;
  store: BlobStore;
  runtime: LocalSandboxRuntime;
  client: Client;
  config: Config;
  ctx: AppContext;
  workers: Worker[];
  api?: FastifyInstance;
  apiUrl?: string;
  deps: ActivityDeps;
  newAccount(name?: string): Promise<{ id: string; apiKey: string }>;
  close(): Promise<void>;
}

/**
 * A caged stack on the real services of the run: the shared Temporal dev server, PostgreSQL (or
 * PGlite) and the moto S3 server (or the fs store). Each stack has its own task queue, so test
 * files running in parallel never take each other's tasks.
 */
export async function startStack(opts: StackOptions = {}): Promise<TestStack> {
  quietTemporalRuntime();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'caged-stack-'));
  const queue = `caged-test-${randomSuffix(8)}`;
  const base = loadConfig({ CAGED_DATA_DIR: dir, TEMPORAL_TASK_QUEUE: queue, CAGED_HOST_ID: 'testhost' }, 'dev');
  let config: Config = {
    ...base,
    adminToken: 'test-admin-token-0123456789',
    urlSecret: 'test-url-secret-0123456789',
    ...opts.config,
    limits: { ...base.limits, ...opts.limits },
  };
  const db = await openCatalog(opts.catalog === 'pglite' ? {} : { databaseUrl: opts.databaseUrl ?? inject('databaseUrl'), onConnectionError: () => {} });
  // As the app wires it: classified, transient failures retried within the bound, and S3's request timeout derived from it.
  const store = createBlobStore({
    dataDir: dir,
    s3:
      opts.store === 's3'
        ? {
            bucket: inject('s3Bucket'),
            endpoint: opts.s3Endpoint ?? inject(opts.s3Server === 's3rver' ? 's3rverEndpoint' : 's3Endpoint'),
            region: 'us-east-1',
            forcePathStyle: true,
            prefix: `${queue}/`,
            partSizeBytes: 5 * 1024 * 1024,
            queueSize: 2,
            ...(opts.s3RequestTimeoutMs && { requestTimeoutMs: opts.s3RequestTimeoutMs }),
          }
        : undefined,
    s3Credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    storageRetryMs: opts.storageRetryMs ?? config.storageRetryMs,
    onRetry: opts.onStorageRetry,
  });
  const runtime = new LocalSandboxRuntime({ baseDir: path.join(dir, 'sandboxes'), templatesDir: path.join(PROJECT_ROOT, 'templates') });
  const log = pino({ level: process.env.CAGED_TEST_LOG ?? 'silent' });
  const address = opts.temporalAddress ?? inject('temporalAddress');
  const connection = await Connection.connect({ address });
  const client = new Client({ connection });
  const deps: ActivityDeps = { db, store, runtime, limits: config.limits, log, faultHook: opts.faultHook, workDir: path.join(dir, 'work'), gcGraceSeconds: config.gc.graceSeconds };
  const native = await NativeConnection.connect({ address });
  let api: FastifyInstance | undefined;
  let apiUrl: string | undefined;
  const ctx: AppContext = { config, db, store, runtime, temporal: client, log };
  if (opts.api) {
    api = await buildServer(ctx);
    apiUrl = await api.listen({ host: '127.0.0.1', port: 0 });
    // Download URLs must point at this API.
    ctx.config = config = { ...config, publicUrl: apiUrl };
  }
  deps.urls = { secret: config.urlSecret!, publicUrl: config.publicUrl };
  const workers =
    opts.workers === false
      ? []
      : await createWorkers(deps, {
          connection: native,
          namespace: 'default',
          taskQueue: queue,
          hostId: config.hostId,
          workflowBundle: { code: inject('workflowCode') },
        });
  const running = workers.map((w) => w.run());
  return {
    dir,
    db,
    store,
    runtime,
    client,
    config,
    ctx,
    workers,
    api,
    apiUrl,
    deps,
    async newAccount(name = 'test') {
      const { account, apiKey } = await createAccount(db, name);
      return { id: account.id, apiKey };
    },
    async close() {
      await api?.close();
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await Promise.allSettled(running);
      await native.close().catch(() => {});
      await connection.close().catch(() => {});
      for (const id of fs.existsSync(path.join(dir, 'sandboxes')) ? fs.readdirSync(path.join(dir, 'sandboxes')) : []) {
        if (/^cage-/.test(id)) await runtime.destroy(id).catch(() => {});
      }
      await store.close?.();
      await db.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
