import { NativeConnection } from '@temporalio/worker';
import { loadConfig } from '../config.js';
import { createLogger, installTemporalLogging, resolveLogFormat } from './logger.js';
import { installProcessGuards } from './process-guard.js';
import { activityDeps, createAppContext } from './context.js';
import { ensureGcSchedule } from './gc-schedule.js';
import { createWorkers, runWorkers } from './worker.js';

/** `caged worker`: the shared queue and this host's queue (CAGED_HOST_ID). */
export async function runWorker(): Promise<void> {
  const config = loadConfig(process.env, 'prod');
  const log = createLogger(config.logLevel, resolveLogFormat(config.logFormat));
  installTemporalLogging(log);
  installProcessGuards(log, 'caged worker');
  const address = config.temporal.address ?? '127.0.0.1:7233';
  const ctx = await createAppContext(config, log, address);
  const connection = await NativeConnection.connect({ address });
  const workers = await createWorkers(
    activityDeps(ctx),
    { connection, namespace: config.temporal.namespace, taskQueue: config.temporal.taskQueue, hostId: config.hostId },
  );
  await ensureGcSchedule(ctx.temporal, { taskQueue: config.temporal.taskQueue, intervalSeconds: config.gc.intervalSeconds });
  log.info({ taskQueue: config.temporal.taskQueue, hostId: config.hostId }, 'caged worker running');
  // The SDK shuts the workers down gracefully on SIGINT/SIGTERM.
  await runWorkers(workers);
  await connection.close();
  await ctx.close();
}
