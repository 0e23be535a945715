import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { apiClient } from './support/http.js';
import { freePort, freeTemporalPort, portIsFree } from '../src/runtime/child-process.js';
import { PROJECT_ROOT } from '../src/runtime/tools.js';
import { LocalSandboxRuntime } from '../src/sandbox/local-runtime.js';

const START_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 30_000;

interface DevRun {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  apiUrl: string;
  apiKey: string;
  adminToken: string;
  uiUrl: string;
  temporalPid: number;
}

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'caged-dev-test-'));
/** Everything started here, so that a failing test still leaves nothing running. */
const started: DevRun[] = [];
const temporalPids = new Set<number>();
const extraDirs: string[] = [];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Direct children of a process, read from /proc. */
function childrenOf(pid: number): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      // The command name may contain spaces and parentheses: the fields after it start at the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push({ pid: Number(name), cmdline: fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ') });
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(CAGED_|TEMPORAL_|DATABASE_URL$|S3_)/.test(k)));
}

/** `npm start` is `node bin/caged.mjs dev`; its own process group lets cleanup reach everything it started. */
function spawnDev(dir: string, port: number, temporalPort: number, env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['bin/caged.mjs', 'dev'], {
    cwd: PROJECT_ROOT,
    env: { ...cleanEnv(), CAGED_DATA_DIR: dir, CAGED_PORT: String(port), CAGED_TEMPORAL_PORT: String(temporalPort), CAGED_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const run: DevRun = { child, output: () => `--- stdout\n${stdout}\n--- stderr\n${stderr}`, exited, apiUrl: '', apiKey: '', adminToken: '', uiUrl: '', temporalPid: 0 };
  started.push(run);
  return { run, stdout: () => stdout, stderr: () => stderr };
}

/** Temporal dev servers serving this gRPC port, found by their command line. */
function temporalServersOn(port: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        const cmd = fs.readFileSync(`/proc/${n}/cmdline`, 'utf8').split('\0');
        return cmd.includes('start-dev') && cmd[cmd.indexOf('--port') + 1] === String(port);
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** ui: 'default' expects the UI on the gRPC port + 1000; 'off' starts it with CAGED_TEMPORAL_UI_PORT=0. */
async function startDev(ui: 'default' | 'off' = 'default'): Promise<DevRun> {
  const port = await freePort();
  const temporalPort = await freeTemporalPort();
  const { run, stdout: out } = spawnDev(dataDir, port, temporalPort, ui === 'off' ? { CAGED_TEMPORAL_UI_PORT: '0' } : {});
  const { child, output } = run;
  let stdout = out();

  const deadline = Date.now() + START_TIMEOUT_MS;
  let healthy = false;
  while (!healthy) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`caged dev exited early (${child.exitCode ?? child.signalCode})\n${output()}`);
    if (Date.now() > deadline) throw new Error(`caged dev did not come up within ${START_TIMEOUT_MS} ms\n${output()}`);
    stdout = out();
    const api = /^ {2}API: +(http:\/\/\S+)$/m.exec(stdout)?.[1];
    if (api) {
      run.apiUrl = api;
      const res = await fetch(`${api}/healthz`).catch(() => undefined);
      if (res?.status === 200) {
        expect(await res.json()).toEqual({ ok: true });
        healthy = true;
        break;
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  stdout = out();
  expect(run.apiUrl).toBe(`http://127.0.0.1:${port}`);
  run.apiKey = /^ {2}API key: +(caged_sk_\S+)$/m.exec(stdout)?.[1] ?? '';
  run.adminToken = /^ {2}Admin token: +(\S{16,})$/m.exec(stdout)?.[1] ?? '';
  run.uiUrl = /^ {2}Temporal UI: +(\S+)$/m.exec(stdout)?.[1] ?? '';
  expect(run.apiKey, output()).toMatch(/^caged_sk_[A-Za-z0-9_-]{16,}$/);
  expect(run.adminToken, output()).not.toBe('');
  if (ui === 'default') {
    expect(run.uiUrl, output()).toBe(`http://127.0.0.1:${temporalPort + 1000}`);
  } else {
    expect(stdout).toMatch(/^ {2}Temporal UI: +\(off: CAGED_TEMPORAL_UI_PORT=0\)$/m);
    expect(await portIsFree(temporalPort + 1000)).toBe(true);
  }
  expect(stdout).toContain(`export CAGED_API_URL=${run.apiUrl} CAGED_API_KEY=${run.apiKey}`);
  // A normal start is quiet: no warnings from the SDK, Node or fastify, and (not a terminal) JSON lines.
  expect(output(), output()).not.toMatch(/\bWARN\b|"level":40|Warning|Deprecation/);

  const temporal = childrenOf(child.pid!).filter((c) => c.cmdline.includes('server start-dev') && c.cmdline.includes(`--port ${temporalPort}`));
  expect(temporal, JSON.stringify(childrenOf(child.pid!))).toHaveLength(1);
  run.temporalPid = temporal[0]!.pid;
  temporalPids.add(run.temporalPid);
  expect(temporal[0]!.cmdline).toContain(`--db-filename ${path.join(dataDir, 'temporal.sqlite')}`);
  return run;
}

/** Ctrl-C: the whole stack stops cleanly within the limit and leaves no Temporal server behind. */
async function interrupt(run: DevRun): Promise<void> {
  const t0 = Date.now();
  run.child.kill('SIGINT');
  const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), STOP_TIMEOUT_MS).unref());
  const result = await Promise.race([run.exited, timeout]);
  expect(result, `caged dev still running ${STOP_TIMEOUT_MS} ms after SIGINT\n${run.output()}`).not.toBe('timeout');
  expect(result, run.output()).toEqual({ code: 0, signal: null });
  expect(Date.now() - t0).toBeLessThan(STOP_TIMEOUT_MS);
  expect(alive(run.temporalPid), `temporal dev server ${run.temporalPid} left running`).toBe(false);
  expect(run.output()).toContain('caged dev: stopping');
  // Nothing answers on the API port any more.
  await expect(fetch(`${run.apiUrl}/healthz`)).rejects.toThrow();
}

afterAll(async () => {
  for (const run of started) {
    if (run.child.exitCode === null && run.child.signalCode === null) {
      try {
        process.kill(-run.child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
      await Promise.race([run.exited, new Promise((r) => setTimeout(r, 5000))]);
    }
  }
  for (const pid of temporalPids) {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  // Sandbox agents run in their own sessions, by design outliving `caged dev`: stop them here.
  const sandboxes = path.join(dataDir, 'sandboxes');
  const runtime = new LocalSandboxRuntime({ baseDir: sandboxes, templatesDir: path.join(PROJECT_ROOT, 'templates') });
  for (const id of fs.existsSync(sandboxes) ? fs.readdirSync(sandboxes) : []) {
    if (/^cage-[a-z0-9]{8}$/.test(id)) await runtime.destroy(id).catch(() => {});
  }
  fs.rmSync(dataDir, { recursive: true, force: true });
  for (const dir of extraDirs) fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('npm start (caged dev)', () => {
  let first: DevRun;
  let sandboxId: string;
  let snapshotId: string;

  it('comes up, serves a snapshot end to end, and stops on SIGINT', async () => {
    first = await startDev();
    const api = apiClient(first.apiUrl, first.apiKey);

    sandboxId = await api.createSandbox();
    expect(sandboxId).toMatch(/^cage-[a-z0-9]{8}$/);
    expect((await api.call('PUT', `/v1/sandboxes/${sandboxId}/files/notes/hello.txt`, 'kept across restarts\n')).status).toBe(204);
    const { op, snapshotId: snap } = await api.snapshot(sandboxId, 'before-restart');
    expect(op.status, JSON.stringify(op)).toBe('succeeded');
    snapshotId = snap;
    const got = await api.call('GET', `/v1/snapshots/${snapshotId}`);
    expect(got.body).toMatchObject({ id: snapshotId, name: 'before-restart', state: 'ready' });
    expect(got.body.size_bytes).toBeGreaterThan(0);

    // The printed admin token is the operator token.
    const acct = await apiClient(first.apiUrl, first.adminToken).call('POST', '/v1/admin/accounts', { name: 'dev-test' });
    expect(acct.status).toBe(201);
    expect(acct.body.api_key).toMatch(/^caged_sk_/);

    await interrupt(first);
  }, 180_000);

  it('a second start on the same data dir, with the Temporal UI off, keeps the data and the key', async () => {
    expect(first?.child.exitCode, 'the first run must have stopped').toBe(0);
    const second = await startDev('off');
    expect(second.apiKey).toBe(first.apiKey);
    expect(second.adminToken).toBe(first.adminToken);
    expect(second.temporalPid).not.toBe(first.temporalPid);

    const api = apiClient(second.apiUrl, first.apiKey);
    const sandboxes = await api.call('GET', '/v1/sandboxes');
    expect(sandboxes.status).toBe(200);
    expect(sandboxes.body.sandboxes.map((s: any) => s.id)).toEqual([sandboxId]);
    const list = await api.call('GET', `/v1/sandboxes/${sandboxId}/snapshots`);
    expect(list.status).toBe(200);
    expect(list.body.snapshots.map((s: any) => [s.id, s.name, s.state])).toEqual([[snapshotId, 'before-restart', 'ready']]);
    const ops = await api.call('GET', `/v1/operations?sandbox_id=${sandboxId}&type=create_snapshot`);
    expect(ops.body.operations.map((o: any) => [o.snapshot_id, o.status])).toEqual([[snapshotId, 'succeeded']]);
    const file = await fetch(`${second.apiUrl}/v1/sandboxes/${sandboxId}/files/notes/hello.txt`, { headers: { authorization: `Bearer ${first.apiKey}` } });
    expect(file.status).toBe(200);
    expect(await file.text()).toBe('kept across restarts\n');

    // The restarted stack still works: its workflows and workers pick up new operations.
    const after = await api.snapshot(sandboxId, 'after-restart');
    expect(after.op.status, JSON.stringify(after.op)).toBe('succeeded');
    const names = (await api.call('GET', `/v1/sandboxes/${sandboxId}/snapshots`)).body.snapshots.map((s: any) => s.name);
    expect(names).toEqual(['after-restart', 'before-restart']);

    await interrupt(second);
  }, 180_000);

  it('a start whose API port is taken exits 1 naming the port, before it starts Temporal', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'caged-dev-test-'));
    extraDirs.push(dir);
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve()));
    try {
      const port = (blocker.address() as net.AddressInfo).port;
      const temporalPort = await freeTemporalPort();
      const { run, stderr } = spawnDev(dir, port, temporalPort);
      const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), START_TIMEOUT_MS).unref());
      const result = await Promise.race([run.exited, timeout]);
      expect(result, `caged dev did not give up on a taken port\n${run.output()}`).not.toBe('timeout');
      expect(result, run.output()).toEqual({ code: 1, signal: null });
      expect(stderr()).toContain(`port ${port} (CAGED_PORT) is already in use on 127.0.0.1; stop what listens there or set CAGED_PORT`);
      // Refused up front: no Temporal server (nor its UI, which would answer /healthz) ever ran.
      expect(fs.existsSync(path.join(dir, 'temporal.sqlite'))).toBe(false);
      expect(temporalServersOn(temporalPort)).toEqual([]);
      expect(await portIsFree(temporalPort)).toBe(true);
    } finally {
      blocker.close();
    }
  }, 120_000);

  it('a Temporal UI port that is the API port is refused before anything starts, with the setting to change', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'caged-dev-test-'));
    extraDirs.push(dir);
    const temporalPort = await freeTemporalPort();
    const port = temporalPort + 1000;
    const { run, stderr } = spawnDev(dir, port, temporalPort);
    const result = await Promise.race([run.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), START_TIMEOUT_MS).unref())]);
    expect(result, run.output()).toEqual({ code: 1, signal: null });
    expect(stderr()).toContain(
      `CAGED_PORT and CAGED_TEMPORAL_UI_PORT are both ${port}; give them different ports (the UI defaults to CAGED_TEMPORAL_PORT + 1000; 0 turns it off)`,
    );
    expect(fs.existsSync(path.join(dir, 'temporal.sqlite'))).toBe(false);
    expect(temporalServersOn(temporalPort)).toEqual([]);
  }, 120_000);

  it('a caged dev that is SIGKILLed takes its Temporal server with it, and the next start on the same data dir comes up', async () => {
    const run = await startDev();
    process.kill(run.child.pid!, 'SIGKILL');
    await run.exited;
    // The server got SIGTERM from the kernel when its parent died (setpriv --pdeathsig).
    for (let i = 0; alive(run.temporalPid); i++) {
      if (i > 100) throw new Error(`temporal dev server ${run.temporalPid} outlived its killed parent`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const again = await startDev();
    expect((await fetch(`${again.apiUrl}/healthz`)).status).toBe(200);
    await interrupt(again);
  }, 180_000);
});
