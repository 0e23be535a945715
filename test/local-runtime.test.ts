import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalSandboxRuntime } from '../src/sandbox/local-runtime.js';
import { parseProcStat, readProcStat } from '../src/sandbox/procfs.js';
import type { ExecResult } from '../src/sandbox/runtime.js';
import { CagedError } from '../src/shared/errors.js';
import { newSandboxId } from '../src/shared/ids.js';
import { sleep } from './support/wait.js';

const TEMPLATES = fileURLToPath(new URL('../templates', import.meta.url));

let baseDir: string;
let runtime: LocalSandboxRuntime;
const sandboxes = new Set<string>();

async function newSandbox(template = 'base', rt = runtime): Promise<string> {
  const id = newSandboxId();
  sandboxes.add(id);
  await rt.create({ id, template });
  return id;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CagedError) return err.code;
    throw err;
  }
  throw new Error('expected a CagedError, got success');
}

async function readText(id: string, rel: string): Promise<string> {
  return (await buffer(await runtime.readFile(id, rel))).toString('utf8');
}

/** Files, dirs and links under dir, keyed by relative path, with mode and content or link target. */
async function describeTree(dir: string): Promise<Record<string, { mode: number; kind: string; data: string }>> {
  const out: Record<string, { mode: number; kind: string; data: string }> = {};
  for (const rel of await fs.readdir(dir, { recursive: true })) {
    const abs = path.join(dir, rel);
    const st = await fs.lstat(abs);
    const kind = st.isSymbolicLink() ? 'link' : st.isDirectory() ? 'dir' : 'file';
    const data = kind === 'link' ? await fs.readlink(abs) : kind === 'file' ? (await fs.readFile(abs)).toString('base64') : '';
    out[rel] = { mode: st.mode, kind, data };
  }
  return out;
}

/** Raw, because a pause can fall between the writer's truncate and its write and leave the file empty. */
async function readRaw(root: string): Promise<string> {
  return fs.readFile(path.join(root, 'counter'), 'utf8');
}

/** For progress checks: a read that lands between truncate and write sees an empty file, so retry briefly. */
async function readCounter(root: string): Promise<number> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const text = (await readRaw(root).catch(() => '')).trim();
    if (text) return Number(text);
    if (Date.now() > deadline) throw new Error('counter stayed empty');
    await sleep(10);
  }
}

/** Zombies count as gone: this machine's pid 1 may not reap orphans. */
async function isGone(pid: number): Promise<boolean> {
  const stat = await readProcStat(pid);
  return !stat || stat.state === 'Z';
}

async function agentPid(id: string): Promise<number> {
  return Number((await fs.readFile(path.join(runtime.sandboxDir(id), 'agent.pid'), 'utf8')).split('\n')[0]);
}

beforeAll(async () => {
  baseDir = await fs.mkdtemp(path.join(os.tmpdir(), 'caged-local-runtime-'));
  runtime = new LocalSandboxRuntime({ baseDir, templatesDir: TEMPLATES });
});

afterAll(async () => {
  for (const id of sandboxes) await runtime.destroy(id);
  await fs.rm(baseDir, { recursive: true, force: true });
});

describe('create', () => {
  it('copies the template bytes and modes into root, and is idempotent', async () => {
    const id = await newSandbox();
    const root = runtime.rootDir(id);
    expect(root).toBe(path.join(baseDir, id, 'root'));
    expect(runtime.sandboxDir(id)).toBe(path.join(baseDir, id));
    expect(await runtime.exists(id)).toBe(true);
    const expected = await describeTree(path.join(TEMPLATES, 'base'));
    expect(Object.keys(expected).sort()).toEqual(['.bashrc', 'README.md', 'src', 'src/main.py']);
    expect(await describeTree(root)).toEqual(expected);
    expect((await fs.stat(path.join(root, 'src/main.py'))).mode & 0o777).toBe(0o755);

    await fs.writeFile(path.join(root, 'README.md'), 'changed');
    await runtime.create({ id, template: 'base' });
    expect(await fs.readFile(path.join(root, 'README.md'), 'utf8')).toBe('changed');
  });

  it('keeps symlinks verbatim and unusual modes', async () => {
    const templatesDir = await fs.mkdtemp(path.join(os.tmpdir(), 'caged-templates-'));
    try {
      const t = path.join(templatesDir, 'odd-1');
      await fs.mkdir(path.join(t, 'private'), { recursive: true });
      await fs.writeFile(path.join(t, 'private/secret'), 'shh', { mode: 0o600 });
      await fs.chmod(path.join(t, 'private'), 0o700);
      await fs.symlink('/etc/hostname', path.join(t, 'abs-link'));
      await fs.symlink('private/secret', path.join(t, 'rel-link'));
      const rt = new LocalSandboxRuntime({ baseDir, templatesDir });
      const id = await newSandbox('odd-1', rt);
      const tree = await describeTree(rt.rootDir(id));
      expect(tree).toEqual(await describeTree(t));
      expect(tree['abs-link']).toMatchObject({ kind: 'link', data: '/etc/hostname' });
      expect(tree['private']!.mode & 0o777).toBe(0o700);
      expect(tree['private/secret']!.mode & 0o777).toBe(0o600);
    } finally {
      await fs.rm(templatesDir, { recursive: true, force: true });
    }
  });

  it('rejects unknown or malformed templates and ids', async () => {
    expect(await codeOf(runtime.create({ id: newSandboxId(), template: 'nope' }))).toBe('invalid_input');
    expect(await codeOf(runtime.create({ id: newSandboxId(), template: '../templates/base' }))).toBe('invalid_input');
    expect(await codeOf(runtime.create({ id: 'cage-../../x', template: 'base' }))).toBe('invalid_input');
    expect(() => runtime.rootDir('cage-ABCDEFGH')).toThrow(CagedError);
    expect(await fs.readdir(baseDir)).toEqual(expect.not.arrayContaining([expect.stringMatching(/\.\./)]));
  });

  it('createEmpty makes an empty root', async () => {
    const id = newSandboxId();
    sandboxes.add(id);
    expect(await runtime.exists(id)).toBe(false);
    await runtime.createEmpty(id);
    await runtime.createEmpty(id);
    expect(await runtime.exists(id)).toBe(true);
    expect(await fs.readdir(runtime.rootDir(id))).toEqual([]);
  });
});

describe('files', () => {
  let id: string;
  beforeAll(async () => {
    id = await newSandbox();
  });

  it('round-trips exact bytes, creating nested directories', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    await runtime.writeFile(id, 'deep/er/still/file.bin', Readable.from([body.subarray(0, 1000), body.subarray(1000)]));
    expect((await buffer(await runtime.readFile(id, 'deep/er/still/file.bin'))).equals(body)).toBe(true);
    // Buffer.equals, not toEqual: a deep compare of megabytes takes vitest seconds.
    expect((await fs.readFile(path.join(runtime.rootDir(id), 'deep/er/still/file.bin'))).equals(body)).toBe(true);
    // No temporary file is left beside the target.
    expect(await fs.readdir(path.join(runtime.rootDir(id), 'deep/er/still'))).toEqual(['file.bin']);
  });

  it('overwrites in place, keeping the mode of an existing file', async () => {
    await runtime.writeFile(id, 'src/main.py', Readable.from([Buffer.from('print("bye")\n')]));
    expect(await readText(id, 'src/main.py')).toBe('print("bye")\n');
    expect((await fs.stat(path.join(runtime.rootDir(id), 'src/main.py'))).mode & 0o777).toBe(0o755);
  });

  it('reports missing files, directories and deletes', async () => {
    expect(await codeOf(runtime.readFile(id, 'missing.txt'))).toBe('not_found');
    expect(await codeOf(runtime.readFile(id, 'README.md/below'))).toBe('not_found');
    expect(await codeOf(runtime.readFile(id, 'src'))).toBe('invalid_input');
    expect(await codeOf(runtime.writeFile(id, 'src', Readable.from([Buffer.from('x')])))).toBe('invalid_input');
    expect(await codeOf(runtime.deleteFile(id, 'src'))).toBe('invalid_input');
    await runtime.deleteFile(id, 'README.md');
    expect(await codeOf(runtime.readFile(id, 'README.md'))).toBe('not_found');
    expect(await codeOf(runtime.deleteFile(id, 'README.md'))).toBe('not_found');
    expect(await codeOf(runtime.readFile('cage-00000000', 'README.md'))).toBe('not_found');
  });

  it('rejects paths that leave the root', async () => {
    await fs.symlink('/', path.join(runtime.rootDir(id), 'escape'));
    const body = () => Readable.from([Buffer.from('pwned')]);
    for (const p of ['../x', '/etc/passwd', 'a/../../x', '..', '', '.', 'a\0b', 'escape/etc/passwd', 'escape', 'escape/tmp/caged-escape-test']) {
      expect(await codeOf(runtime.readFile(id, p)), `read ${JSON.stringify(p)}`).toBe('invalid_input');
      expect(await codeOf(runtime.writeFile(id, p, body())), `write ${JSON.stringify(p)}`).toBe('invalid_input');
      expect(await codeOf(runtime.deleteFile(id, p)), `delete ${JSON.stringify(p)}`).toBe('invalid_input');
    }
    expect(await fs.stat('/tmp/caged-escape-test').catch(() => undefined)).toBeUndefined();
    await fs.rm(path.join(runtime.rootDir(id), 'escape'));
  });

  it('refuses a FIFO planted in the sandbox instead of hanging on it', async () => {
    execFileSync('mkfifo', [path.join(runtime.rootDir(id), 'pipe')]);
    expect(await codeOf(runtime.readFile(id, 'pipe'))).toBe('invalid_input');
  });
});

describe('exec', () => {
  let id: string;
  beforeAll(async () => {
    id = await newSandbox();
  });

  it('runs a foreground command in the root and returns its exact output', async () => {
    expect(await runtime.exec(id, ['sh', '-c', 'echo hi; exit 3'], { background: false })).toEqual({ exit_code: 3, stdout: 'hi\n', stderr: '' });
    expect(await runtime.exec(id, ['sh', '-c', 'echo oops >&2; pwd; echo "$HOME"'], { background: false })).toEqual({
      exit_code: 0,
      stdout: `${runtime.rootDir(id)}\n${runtime.rootDir(id)}\n`,
      stderr: 'oops\n',
    });
    expect(await runtime.exec(id, ['python3', 'src/main.py'], { background: false })).toEqual({ exit_code: 0, stdout: 'hello\n', stderr: '' });
  });

  it('maps a missing program, a signal death and a timeout to shell exit codes', async () => {
    const missing = (await runtime.exec(id, ['no-such-program-xyz'], { background: false })) as ExecResult;
    expect(missing.exit_code).toBe(127);
    const killed = (await runtime.exec(id, ['sh', '-c', 'kill -9 $$'], { background: false })) as ExecResult;
    expect(killed.exit_code).toBe(137);
    const started = Date.now();
    const slow = (await runtime.exec(id, ['sleep', '30'], { background: false, timeoutMs: 200 })) as ExecResult;
    expect(slow.exit_code).toBe(124);
    expect(slow.stderr).toContain('timed out');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('caps captured output at 1 MiB and says so', async () => {
    const res = (await runtime.exec(id, ['sh', '-c', "head -c 3000000 /dev/zero | tr '\\0' a"], { background: false })) as ExecResult;
    expect(res.exit_code).toBe(0);
    expect(res.stdout).toBe(`${'a'.repeat(1024 * 1024)}\n[caged: output truncated at 1048576 bytes]\n`);
  });

  it('rejects bad commands and missing sandboxes', async () => {
    expect(await codeOf(runtime.exec(id, [], { background: false }))).toBe('invalid_input');
    expect(await codeOf(runtime.exec('cage-00000000', ['true'], { background: false }))).toBe('not_found');
  });
});

describe('processes', () => {
  let id: string;
  let root: string;
  let loopPid: number;

  beforeAll(async () => {
    id = await newSandbox();
    root = runtime.rootDir(id);
  });

  it('has no processes before the first exec', async () => {
    expect(await runtime.processState(id)).toBe('none');
    await runtime.pause(id);
    await runtime.resume(id);
    expect(await runtime.processState(id)).toBe('none');
  });

  it('runs a background writer that makes progress', async () => {
    const res = await runtime.exec(id, ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > counter; sleep 0.05; done'], { background: true });
    expect(res).toEqual({ pid: expect.any(Number) });
    loopPid = (res as { pid: number }).pid;
    const first = await readCounter(root);
    await sleep(300);
    expect(await readCounter(root)).toBeGreaterThan(first);
    expect(await runtime.processState(id)).toBe('running');
  });

  it('keeps the processes in the agent group, in a session of their own', async () => {
    const agent = await agentPid(id);
    const loop = await readProcStat(loopPid);
    const self = parseProcStat(await fs.readFile('/proc/self/stat', 'utf8'));
    expect(loop?.pgrp).toBe(agent);
    expect(loop?.session).toBe(agent);
    expect(loop?.session).not.toBe(self?.session);
    expect(loop?.pgrp).not.toBe(self?.pgrp);
  });

  it('pause stops the group and resume continues it', async () => {
    await runtime.pause(id);
    expect(await runtime.processState(id)).toBe('stopped');
    expect((await readProcStat(loopPid))?.state).toBe('T');
    const paused = await readRaw(root);
    await sleep(300);
    expect(await readRaw(root)).toBe(paused);

    const started = Date.now();
    expect(await codeOf(runtime.exec(id, ['true'], { background: false }))).toBe('invalid_state');
    expect(Date.now() - started).toBeLessThan(1000);

    const a = Number(paused.trim() || 0);
    await runtime.resume(id);
    expect(await runtime.processState(id)).toBe('running');
    await sleep(300);
    expect(await readCounter(root)).toBeGreaterThan(a);
  });

  it('a new runtime instance (a restarted worker) finds and controls the same processes', async () => {
    const restarted = new LocalSandboxRuntime({ baseDir, templatesDir: TEMPLATES });
    expect(await restarted.processState(id)).toBe('running');
    await restarted.pause(id);
    expect(await runtime.processState(id)).toBe('stopped');
    const paused = await readRaw(root);
    await sleep(300);
    expect(await readRaw(root)).toBe(paused);
    const a = Number(paused.trim() || 0);
    await restarted.resume(id);
    await sleep(300);
    expect(await readCounter(root)).toBeGreaterThan(a);
    expect(await restarted.exec(id, ['cat', 'counter'], { background: false })).toMatchObject({ exit_code: 0 });
    // The same agent answered: no second one was started.
    expect((await readProcStat(loopPid))?.pgrp).toBe(await agentPid(id));
  });

  it('quiesce leaves the sandbox stopped with its writes on disk', async () => {
    await runtime.quiesce(id);
    expect(await runtime.processState(id)).toBe('stopped');
    const paused = await readRaw(root);
    await sleep(200);
    expect(await readRaw(root)).toBe(paused);
    await runtime.resume(id);
    expect(await runtime.processState(id)).toBe('running');
  });

  it('processes outlive a creator process that is killed with SIGKILL', async () => {
    const other = newSandboxId();
    sandboxes.add(other);
    // .mts: the temp directory has no package.json saying the file is ESM, and the script uses top-level await.
    const script = path.join(baseDir, 'creator.mts');
    const runtimeModule = fileURLToPath(new URL('../src/sandbox/local-runtime.ts', import.meta.url));
    await fs.writeFile(
      script,
      `import { LocalSandboxRuntime } from ${JSON.stringify(runtimeModule)};
const rt = new LocalSandboxRuntime({ baseDir: ${JSON.stringify(baseDir)}, templatesDir: ${JSON.stringify(TEMPLATES)} });
await rt.create({ id: ${JSON.stringify(other)}, template: 'base' });
const { pid } = await rt.exec(${JSON.stringify(other)}, ['sh', '-c', 'while true; do date +%s%N > tick; sleep 0.05; done'], { background: true });
console.log(pid);
setInterval(() => {}, 1000);
`,
    );
    const creator = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((r) => creator.once('exit', r));
    const pid = Number(
      await new Promise<string>((resolve, reject) => {
        creator.stdout.once('data', (d: Buffer) => resolve(d.toString()));
        creator.once('exit', (code) => reject(new Error(`creator exited early with ${code}`)));
      }),
    );
    creator.kill('SIGKILL');
    await exited;
    await sleep(200);
    expect(await isGone(pid)).toBe(false);
    expect(await runtime.processState(other)).toBe('running');
    await runtime.pause(other);
    expect((await readProcStat(pid))?.state).toBe('T');
    await runtime.resume(other);
    expect((await readProcStat(pid))?.state).not.toBe('T');
    await runtime.destroy(other);
    expect(await isGone(pid)).toBe(true);
  });

  it('destroy kills the processes and removes the directory, idempotently', async () => {
    const agent = await agentPid(id);
    await runtime.destroy(id);
    expect(await isGone(loopPid)).toBe(true);
    expect(await isGone(agent)).toBe(true);
    expect(await fs.stat(runtime.sandboxDir(id)).catch(() => undefined)).toBeUndefined();
    expect(await runtime.exists(id)).toBe(false);
    expect(await runtime.processState(id)).toBe('none');
    await runtime.destroy(id);
  });

  it('starts a fresh agent when the old one is gone (as after a host reboot)', async () => {
    const other = await newSandbox();
    await runtime.exec(other, ['sh', '-c', 'sleep 30'], { background: true });
    const agent = await agentPid(other);
    process.kill(-agent, 'SIGKILL');
    await sleep(100);
    expect(await runtime.processState(other)).toBe('none');
    expect(await runtime.exec(other, ['echo', 'back'], { background: false })).toEqual({ exit_code: 0, stdout: 'back\n', stderr: '' });
    expect(await agentPid(other)).not.toBe(agent);
    expect(await runtime.processState(other)).toBe('running');
  });
});
