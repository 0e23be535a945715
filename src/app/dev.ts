import fs from 'node:fs';
import path from 'node:path';
import { NativeConnection } from '@temporalio/worker';
import { loadConfig } from '../config.js';
import { createLogger, installTemporalLogging, resolveLogFormat } from './logger.js';
import { installProcessGuards } from './process-guard.js';
import { activityDeps, createAppContext } from './context.js';
import { ensureGcSchedule } from './gc-schedule.js';
import { createWorkers, runWorkers } from './worker.js';
import { persistedSecret } from './secrets.js';
import { startTemporalDevServer } from '../runtime/temporal-dev-server.js';
import { portIsFree } from '../runtime/child-process.js';
import type { Config } from '../config.js';
import { buildServer } from '../api/server.js';
import { ensureAccountWithKey } from '../catalog/accounts.js';
import { newApiKey } from '../shared/ids.js';

/**
 * `caged dev`: everything on one machine with no services: the Temporal dev server as a child
 * process (SQLite under the data directory), PGlite, the filesystem store, the API and a worker.
 */
export async function runDev(): Promise<void> {
  const base = loadConfig(process.env, 'dev');
  fs.mkdirSync(base.dataDir, { recursive: true });
  const config = {
    ...base,
    adminToken: base.adminToken ?? persistedSecret(base.dataDir, 'admin-token'),
    urlSecret: base.urlSecret ?? persistedSecret(base.dataDir, 'url-secret'),
  };
  const devKey = base.devApiKey ?? persistedSecret(base.dataDir, 'dev-api-key', newApiKey);
  const log = createLogger(config.logLevel, resolveLogFormat(config.logFormat));
  installTemporalLogging(log);
  installProcessGuards(log, 'caged dev');

  await assertPortsFree(config);
  const temporal = config.temporal.address
    ? undefined
    : await startTemporalDevServer({
        port: config.temporal.devServerPort,
        ...(config.temporal.devServerUiPort === 0 ? { headless: true } : { uiPort: config.temporal.devServerUiPort }),
        dbFile: path.join(config.dataDir, 'temporal.sqlite'),
        logFile: path.join(config.dataDir, 'temporal.log'),
        namespace: config.temporal.namespace,
      });
  const address = config.temporal.address ?? temporal!.address;
  let ctx: Awaited<ReturnType<typeof createAppContext>> | undefined;
  let connection: NativeConnection | undefined;
  let workers: Awaited<ReturnType<typeof createWorkers>> = [];
  let running: Promise<unknown> = Promise.resolve();
  let api: Awaited<ReturnType<typeof buildServer>> | undefined;
  /** Stops whatever has been started so far, in reverse order. */
  const teardown = async () => {
    await api?.close().catch(() => {});
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    await running.catch(() => {});
    await connection?.close().catch(() => {});
    await ctx?.close();
    await temporal?.stop();
  };
  try {
    ctx = await createAppContext(config, log, address);
    await ensureAccountWithKey(ctx.db, 'development', devKey);

    connection = await NativeConnection.connect({ address });
    workers = await createWorkers(
      activityDeps(ctx),
      { connection, namespace: config.temporal.namespace, taskQueue: config.temporal.taskQueue, hostId: config.hostId },
    );
    await ensureGcSchedule(ctx.temporal, { taskQueue: config.temporal.taskQueue, intervalSeconds: config.gc.intervalSeconds });
    running = runWorkers(workers);
    api = await buildServer(ctx);
    await api.listen({ host: config.httpHost, port: config.httpPort });
  } catch (err) {
    // A failed start (a taken port, say) must not leave the Temporal server and the workers running.
    await teardown();
    throw err;
  }

  const lines = [
    '',
    'caged dev is running',
    `  API:          ${config.publicUrl}`,
    `  API key:      ${devKey}`,
    `  Admin token:  ${config.adminToken}`,
    `  Temporal UI:  ${temporal ? (temporal.uiUrl ?? '(off: CAGED_TEMPORAL_UI_PORT=0)') : '(external cluster)'}`,
    `  Data dir:     ${config.dataDir}`,
    '',
    `  export CAGED_API_URL=${config.publicUrl} CAGED_API_KEY=${devKey}`,
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    process.stderr.write('caged dev: stopping\n');
    await teardown();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  running.catch(async (err) => {
    log.error({ err }, 'worker stopped');
    await stop();
  });
}

/**
 * The ports this start will listen on, checked before anything starts: a clash found only when the
 * API listens would come after the Temporal server (and its UI, which answers /healthz too) was up.
 * The Temporal gRPC port is checked where the dev server starts, with a hint of its own.
 */
async function assertPortsFree(config: Config): Promise<void> {
  const wanted: Array<{ name: string; host: string; port: number }> = [{ name: 'CAGED_PORT', host: config.httpHost, port: config.httpPort }];
  if (!config.temporal.address) {
    wanted.push({ name: 'CAGED_TEMPORAL_PORT', host: '127.0.0.1', port: config.temporal.devServerPort });
    if (config.temporal.devServerUiPort !== 0) wanted.push({ name: 'CAGED_TEMPORAL_UI_PORT', host: '127.0.0.1', port: config.temporal.devServerUiPort });
  }
  const named = new Map<number, string>();
  for (const w of wanted) {
    if (w.port === 0) continue;
    const other = named.get(w.port);
    if (other) {
      const uiNote = w.name === 'CAGED_TEMPORAL_UI_PORT' ? ' (the UI defaults to CAGED_TEMPORAL_PORT + 1000; 0 turns it off)' : '';
      throw new Error(`${other} and ${w.name} are both ${w.port}; give them different ports${uiNote}`);
    }
    named.set(w.port, w.name);
  }
  for (const w of wanted) {
    if (w.name === 'CAGED_TEMPORAL_PORT' || w.port === 0) continue;
    if (!(await portIsFree(w.port, w.host))) throw new Error(`port ${w.port} (${w.name}) is already in use on ${w.host}; stop what listens there or set ${w.name}`);
  }
}
