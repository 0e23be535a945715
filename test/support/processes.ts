/**
 * caged processes of their own for the fault tests: workers a test can SIGKILL (worker-process.ts)
 * and a real `caged api` (bin/caged.mjs), so "it did not crash" means a process is still alive.
 * Both are wired to a test stack's task queue, sandboxes directory, S3 prefix and catalog.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { inject } from 'vitest';
import { freePort } from '../../src/runtime/child-process.js';
import { PROJECT_ROOT } from '../../src/runtime/tools.js';
import type { TestStack } from './stack.js';

export interface Services {
  temporalAddress?: string;
  databaseUrl?: string;
}

const children = new Set<ChildProcess>();
/** What each worker process printed on stdout ("ready", "held <point>"). */
const stdout = new WeakMap<ChildProcess, string>();

/** Waits until a worker process has printed `text` on stdout. */
export async function waitForOutput(child: ChildProcess, text: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(stdout.get(child) ?? '').includes(text)) {
    if (!alive(child)) throw new Error(`the worker exited (${child.exitCode ?? child.signalCode}) before it printed ${JSON.stringify(text)}`);
    if (Date.now() > deadline) throw new Error(`the worker did not print ${JSON.stringify(text)} within ${timeoutMs} ms; it printed ${JSON.stringify(stdout.get(child))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Every child started here that is still running; for afterAll. */
export async function killAllChildren(): Promise<void> {
  for (const c of [...children]) await killChild(c, 'SIGKILL');
}

export async function killChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (!alive(child)) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill(signal);
  await exited;
}

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function logFd(name: string): number {
  return fs.openSync(path.join(inject('logDir'), `${name}.log`), 'a');
}

/** The run's workflow bundle in a file, for worker processes. */
function bundleFile(stack: TestStack): string {
  const file = path.join(stack.dir, 'workflow-bundle.js');
  if (!fs.existsSync(file)) fs.writeFileSync(file, inject('workflowCode'));
  return file;
}

/** Starts the workers (test/support/worker-process.ts, S3 store) in a child process; resolves once they poll. */
export async function startWorkerProcess(stack: TestStack, name: string, opts: Services & { env?: Record<string, string> } = {}): Promise<ChildProcess> {
  const log = logFd(`worker-${name}`);
  const child = track(
    spawn(process.execPath, ['--import', 'tsx', 'test/support/worker-process.ts'], {
      cwd: PROJECT_ROOT,
      stdio: ['ignore', 'pipe', log],
      env: {
        ...process.env,
        TEMPORAL_ADDRESS: opts.temporalAddress ?? inject('temporalAddress'),
        DATABASE_URL: opts.databaseUrl ?? inject('databaseUrl'),
        CAGED_TEST_TASK_QUEUE: stack.config.temporal.taskQueue,
        CAGED_TEST_HOST_ID: stack.config.hostId,
        CAGED_TEST_S3_ENDPOINT: inject('s3Endpoint'),
        CAGED_TEST_S3_BUCKET: inject('s3Bucket'),
        CAGED_TEST_S3_PREFIX: `${stack.config.temporal.taskQueue}/`,
        CAGED_TEST_SANDBOXES_DIR: path.join(stack.dir, 'sandboxes'),
        CAGED_TEST_WORKFLOW_BUNDLE: bundleFile(stack),
        ...opts.env,
      },
    }),
  );
  fs.closeSync(log);
  stdout.set(child, '');
  child.stdout!.on('data', (d: Buffer) => stdout.set(child, stdout.get(child) + d.toString()));
  await waitForOutput(child, 'ready\n', 90_000).catch((err) => {
    throw new Error(`worker process ${name}: ${(err as Error).message}`);
  });
  return child;
}

/** The environment of a production `caged` process on the stack's queue, catalog (PostgreSQL), S3 prefix and data directory. */
function cagedEnv(stack: TestStack, opts: Services, port: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(CAGED_|TEMPORAL_|S3_|AWS_|DATABASE_URL$)/.test(k)) env[k] = v;
  const queue = stack.config.temporal.taskQueue;
  return Object.assign(env, {
    CAGED_DATA_DIR: stack.dir,
    CAGED_HOST: '127.0.0.1',
    CAGED_PORT: String(port),
    CAGED_EXEC_ENABLED: '1',
    CAGED_IDLE_TIMEOUT_S: '0',
    CAGED_LOG_LEVEL: 'warn',
    CAGED_ADMIN_TOKEN: stack.config.adminToken,
    CAGED_URL_SECRET: stack.config.urlSecret,
    CAGED_HOST_ID: stack.config.hostId,
    TEMPORAL_ADDRESS: opts.temporalAddress ?? inject('temporalAddress'),
    TEMPORAL_TASK_QUEUE: queue,
    DATABASE_URL: opts.databaseUrl ?? inject('databaseUrl'),
    S3_BUCKET: inject('s3Bucket'),
    S3_ENDPOINT: inject('s3Endpoint'),
    S3_PREFIX: `${queue}/`,
    S3_PART_SIZE_MB: '5',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    AWS_REGION: 'us-east-1',
  });
}

/** `caged api` as a production process on the stack's queue, catalog (PostgreSQL) and S3 prefix. */
export async function startApiProcess(stack: TestStack, name: string, opts: Services = {}): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const env = cagedEnv(stack, opts, port);
  const log = logFd(`api-${name}`);
  const child = track(spawn(process.execPath, [path.join(PROJECT_ROOT, 'bin', 'caged.mjs'), 'api'], { cwd: PROJECT_ROOT, env, stdio: ['ignore', log, log] }));
  fs.closeSync(log);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (!alive(child)) throw new Error(`caged api ${name} exited (${child.exitCode ?? child.signalCode}) before it listened; see ${name}.log in ${inject('logDir')}`);
    const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    if (ok) return { child, url };
    if (Date.now() > deadline) throw new Error(`caged api ${name} did not listen within 90 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `caged worker` as a production process (it bundles its workflows itself); resolves once it says it runs. */
export async function startCagedWorkerProcess(stack: TestStack, name: string, opts: Services = {}): Promise<ChildProcess> {
  const env = { ...cagedEnv(stack, opts, 0), CAGED_LOG_LEVEL: 'info' };
  const log = logFd(`caged-worker-${name}`);
  const child = track(spawn(process.execPath, [path.join(PROJECT_ROOT, 'bin', 'caged.mjs'), 'worker'], { cwd: PROJECT_ROOT, env, stdio: ['ignore', 'pipe', log] }));
  fs.closeSync(log);
  const logStream = fs.createWriteStream(path.join(inject('logDir'), `caged-worker-${name}.log`), { flags: 'a' });
  stdout.set(child, '');
  child.stdout!.on('data', (d: Buffer) => {
    stdout.set(child, (stdout.get(child) ?? '').slice(-16_000) + d.toString());
    logStream.write(d);
  });
  await waitForOutput(child, 'caged worker running', 180_000);
  return child;
}
