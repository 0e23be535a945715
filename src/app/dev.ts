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

  const temporal = config.temporal.address
    ? undefined
    : await startTemporalDevServer({
        port: config.temporal.devServerPort,
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
    `  Temporal UI:  ${temporal?.uiUrl ?? '(external cluster)'}`,
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
