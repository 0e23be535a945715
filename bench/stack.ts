/**
 * The caged processes a bench size runs against, in one of two shapes:
 *   split (default): the production shape. A Temporal dev server, `caged api` and `caged worker` as
 *     separate processes, the catalog in a fresh PostgreSQL database, the fs blob store. The worker
 *     process is the one measured.
 *   dev: `caged dev`, everything in one process with PGlite (what `npm start` runs). The measured
 *     process then also holds the API and PGlite.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { freePort, freeTemporalPort } from '../src/runtime/child-process.js';
import { startTemporalDevServer, type DevServer } from '../src/runtime/temporal-dev-server.js';
import { PROJECT_ROOT } from '../src/runtime/tools.js';

const GiB = 1024 ** 3;
const CAGED = path.join(PROJECT_ROOT, 'bin', 'caged.mjs');

export type StackMode = 'split' | 'dev';

export interface Stack {
  mode: StackMode;
  url: string;
  key: string;
  /** The process that runs the activities: `caged worker`, or `caged dev`. */
  workerPid: number;
  /** split: the dev server the stack runs on. */
  temporalAddress?: string;
  /** What the measured process said lately (for error messages). */
  output(): string;
  stop(): Promise<void>;
}

export interface StackOptions {
  dataDir: string;
  /** split: a PostgreSQL URL whose server gets a fresh database for this stack. */
  adminDatabaseUrl: string;
  /** Appended to the database name, so stacks of one run don't collide. */
  label: string;
  log(msg: string): void;
}

/** Settings both shapes share: nothing from the caller's shell, no idle pauses, limits out of the way. */
function baseEnv(dataDir: string, port: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(CAGED_|TEMPORAL_|S3_|DATABASE_URL$)/.test(k)) env[k] = v;
  }
  return Object.assign(env, {
    CAGED_DATA_DIR: dataDir,
    CAGED_PORT: String(port),
    CAGED_IDLE_TIMEOUT_S: '0',
    CAGED_LOG_LEVEL: 'warn',
    CAGED_MAX_SNAPSHOT_BYTES: String(64 * GiB),
    CAGED_MAX_ACCOUNT_BYTES: String(256 * GiB),
  });
}

// e.g. BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' to profile the measured process.
const nodeArgs = () => (process.env.BENCH_NODE_ARGS ?? process.env.BENCH_DEV_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);

interface Proc {
  child: ChildProcess;
  output(): string;
}

function startCaged(command: string, env: NodeJS.ProcessEnv, measured: boolean): Proc {
  const child = spawn(process.execPath, [...(measured ? nodeArgs() : []), CAGED, command], {
    cwd: PROJECT_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so that one that will not stop can be killed with its children.
    detached: true,
  });
  let out = '';
  const keep = (d: Buffer) => {
    out += d.toString();
    if (out.length > 64_000) out = out.slice(-32_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  // BENCH_LOG=FILE keeps everything the measured process prints (e.g. with BENCH_NODE_ARGS=--trace-gc).
  const logFile = process.env.BENCH_LOG ?? process.env.BENCH_DEV_LOG;
  if (measured && logFile) {
    const file = fs.createWriteStream(logFile, { flags: 'a' });
    child.stdout!.pipe(file);
    child.stderr!.pipe(file);
  }
  return { child, output: () => out };
}

async function stopProc(p: Proc, name: string, log: (m: string) => void): Promise<void> {
  const { child } = p;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGINT');
  const timer = setTimeout(() => {
    log(`${name} did not stop within 60 s; killing its process group`);
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }, 60_000);
  await exited;
  clearTimeout(timer);
}

async function waitFor(what: string, p: Proc, ready: () => boolean | Promise<boolean>, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await ready()) return;
    if (p.child.exitCode !== null || p.child.signalCode !== null) {
      throw new Error(`${what} exited (${p.child.exitCode ?? p.child.signalCode}) before it was ready:\n${p.output().trim()}`);
    }
    if (Date.now() > deadline) throw new Error(`${what} was not ready within ${timeoutMs / 1000} s:\n${p.output().trim()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const healthy = async (url: string) => {
  try {
    return (await fetch(`${url}/healthz`)).ok;
  } catch {
    return false;
  }
};

export async function startStack(mode: StackMode, o: StackOptions): Promise<Stack> {
  // The Temporal dev server picks some ports of its own; on a clash, try other ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return mode === 'dev' ? await startDevStack(o) : await startSplitStack(o);
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE|address already in use/i.test((err as Error).message)) throw err;
      o.log('a port was taken; retrying with others');
    }
  }
}

async function startDevStack(o: StackOptions): Promise<Stack> {
  const port = await freePort();
  const env = baseEnv(o.dataDir, port);
  env.CAGED_TEMPORAL_PORT = String(await freeTemporalPort());
  const dev = startCaged('dev', env, true);
  const stop = () => stopProc(dev, 'caged dev', o.log);
  try {
    await waitFor('caged dev', dev, () => /API key:\s+\S+/.test(dev.output()) && dev.output().includes('export CAGED_API_URL='));
  } catch (err) {
    await stop();
    throw err;
  }
  const key = /API key:\s+(\S+)/.exec(dev.output())![1]!;
  return { mode: 'dev', url: `http://127.0.0.1:${port}`, key, workerPid: dev.child.pid!, output: dev.output, stop };
}

async function startSplitStack(o: StackOptions): Promise<Stack> {
  const cleanups: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch((err) => o.log(`cleanup: ${(err as Error).message}`));
  };
  try {
    const db = await createDatabase(o.adminDatabaseUrl, `caged_bench_${process.pid}_${o.label}`, o.log);
    cleanups.push(db.drop);
    const temporal: DevServer = await startTemporalDevServer({ port: await freeTemporalPort(), headless: true, logFile: path.join(o.dataDir, '..', 'temporal.log') });
    cleanups.push(temporal.stop);
    const port = await freePort();
    const adminToken = randomBytes(24).toString('hex');
    const env = {
      ...baseEnv(o.dataDir, port),
      DATABASE_URL: db.url,
      TEMPORAL_ADDRESS: temporal.address,
      CAGED_ADMIN_TOKEN: adminToken,
      CAGED_URL_SECRET: randomBytes(24).toString('hex'),
    };
    const url = `http://127.0.0.1:${port}`;
    const api = startCaged('api', env, false);
    cleanups.push(() => stopProc(api, 'caged api', o.log));
    await waitFor('caged api', api, () => healthy(url));
    const worker = startCaged('worker', { ...env, CAGED_LOG_LEVEL: 'info' }, true);
    cleanups.push(() => stopProc(worker, 'caged worker', o.log));
    await waitFor('caged worker', worker, () => worker.output().includes('caged worker running'));
    const res = await fetch(`${url}/v1/admin/accounts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bench' }),
    });
    if (res.status !== 201) throw new Error(`creating the bench account: HTTP ${res.status} ${await res.text()}`);
    const { api_key: key } = (await res.json()) as { api_key: string };
    return { mode: 'split', url, key, workerPid: worker.child.pid!, temporalAddress: temporal.address, output: worker.output, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** A fresh database next to the one `adminUrl` names; drop() removes it. */
async function createDatabase(adminUrl: string, name: string, log: (m: string) => void): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = new pg.Client({ connectionString: adminUrl });
  try {
    await admin.connect();
  } catch (err) {
    throw new Error(
      `the bench needs PostgreSQL for its catalog (${new URL(adminUrl).host}): ${(err as Error).message}. ` +
        'Set BENCH_DATABASE_URL, or run `npm run bench -- --dev` to measure `caged dev` with PGlite instead.',
    );
  }
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${name}`);
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: adminUrl });
      try {
        await c.connect();
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } catch (err) {
        log(`warning: could not drop database ${name}: ${(err as Error).message}`);
      } finally {
        await c.end().catch(() => {});
      }
    },
  };
}
