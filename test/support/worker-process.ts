/**
 * The caged workers in a process of their own, so a test can SIGKILL them mid-activity and start
 * new ones. Built from the same adapters as a test stack (see stack.ts), configured by env:
 *
 *   TEMPORAL_ADDRESS, DATABASE_URL, CAGED_TEST_TASK_QUEUE, CAGED_TEST_HOST_ID,
 *   CAGED_TEST_S3_ENDPOINT, CAGED_TEST_S3_BUCKET, CAGED_TEST_S3_PREFIX,
 *   CAGED_TEST_SANDBOXES_DIR   the stack's `${dir}/sandboxes`
 *   CAGED_TEST_WORKFLOW_BUNDLE a file with the run's pre-built workflow bundle
 *   CAGED_TEST_SLOW_UPLOAD_MS  optional: sleep this long on every 'upload:progress' chunk
 *   CAGED_TEST_HOLD            optional: "<workflowType>:<fault point>", e.g. "restoreWorkflow:restore:swapped"
 *                              or "pauseWorkflow:activity:quiesceSandbox": the first time an activity of
 *                              that workflow type reaches that point, print "held <point>" and stop
 *                              there (heartbeating) until the activity is cancelled or, with
 *                              CAGED_TEST_HOLD_MAX_MS, that long; else until this process is SIGKILLed
 *
 * Prints "ready" on stdout once the workers poll. Run with `node --import tsx test/support/worker-process.ts`.
 */
import path from 'node:path';
import pino from 'pino';
import { NativeConnection, Runtime, DefaultLogger } from '@temporalio/worker';
import { Context } from '@temporalio/activity';
import { openCatalog } from '../../src/catalog/db.js';
import { createBlobStore } from '../../src/storage/index.js';
import { LocalSandboxRuntime } from '../../src/sandbox/local-runtime.js';
import { createWorkers, runWorkers } from '../../src/app/worker.js';
import { loadConfig } from '../../src/config.js';
import { PROJECT_ROOT } from '../../src/runtime/tools.js';
import type { ActivityDeps } from '../../src/activities/deps.js';
import { installProcessGuards } from '../../src/app/process-guard.js';

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`worker-process: ${name} is not set`);
  return v;
}

async function main() {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const slowMs = Number(process.env.CAGED_TEST_SLOW_UPLOAD_MS ?? 0);
  const holdSpec = process.env.CAGED_TEST_HOLD;
  const hold = holdSpec ? { workflowType: holdSpec.slice(0, holdSpec.indexOf(':')), point: holdSpec.slice(holdSpec.indexOf(':') + 1) } : undefined;
  let held = false;
  const holdMaxMs = Number(process.env.CAGED_TEST_HOLD_MAX_MS ?? 0);
  /**
   * Stays at the held point like a live step: it heartbeats, and it ends when the activity is
   * cancelled (throwing the cancellation, as a data mover would) or, with CAGED_TEST_HOLD_MAX_MS,
   * carries on after that long (a step that cannot be cancelled finishes). Otherwise it stays until
   * the process is killed.
   */
  const holdHere = async () => {
    const ctx = Context.current();
    const beat = setInterval(() => {
      if (!ctx.info.isLocal) ctx.heartbeat();
    }, 1000);
    try {
      await new Promise<void>((resolve, reject) => {
        if (holdMaxMs > 0) setTimeout(resolve, holdMaxMs);
        ctx.cancellationSignal.addEventListener('abort', () => reject(ctx.cancellationSignal.reason));
      });
    } finally {
      clearInterval(beat);
    }
  };
  const log = pino({ level: process.env.CAGED_TEST_LOG ?? 'warn' }, pino.destination(2));
  // The same process-level handling as `caged worker`.
  installProcessGuards(log, 'worker-process');
  const db = await openCatalog({ databaseUrl: env('DATABASE_URL'), onConnectionError: (err) => log.warn({ err: err.message }, 'catalog connection error') });
  const config = loadConfig({}, 'dev');
  // As the app wires it.
  const store = createBlobStore({
    dataDir: env('CAGED_TEST_SANDBOXES_DIR'),
    s3: {
      bucket: env('CAGED_TEST_S3_BUCKET'),
      endpoint: env('CAGED_TEST_S3_ENDPOINT'),
      region: 'us-east-1',
      forcePathStyle: true,
      prefix: env('CAGED_TEST_S3_PREFIX'),
      partSizeBytes: 5 * 1024 * 1024,
      queueSize: 2,
    },
    s3Credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    storageRetryMs: config.storageRetryMs,
  });
  const runtime = new LocalSandboxRuntime({ baseDir: env('CAGED_TEST_SANDBOXES_DIR'), templatesDir: path.join(PROJECT_ROOT, 'templates') });
  const deps: ActivityDeps = {
    db,
    store,
    runtime,
    limits: config.limits,
    log,
    faultHook:
      slowMs > 0 || hold
        ? async (point) => {
            if (hold && !held && point === hold.point && Context.current().info.workflowType === hold.workflowType) {
              held = true;
              process.stdout.write(`held ${point}\n`);
              await holdHere();
            }
            if (slowMs > 0 && point === 'upload:progress') await new Promise((r) => setTimeout(r, slowMs));
          }
        : undefined,
  };
  const connection = await NativeConnection.connect({ address: env('TEMPORAL_ADDRESS') });
  const workers = await createWorkers(deps, {
    connection,
    namespace: 'default',
    taskQueue: env('CAGED_TEST_TASK_QUEUE'),
    hostId: env('CAGED_TEST_HOST_ID'),
    workflowBundle: { codePath: env('CAGED_TEST_WORKFLOW_BUNDLE') },
  });
  const running = runWorkers(workers);
  process.stdout.write('ready\n');
  await running;
  await connection.close();
  await store.close?.();
  await db.destroy();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
