import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { CagedError, isErrorCode } from '../shared/errors.js';
import { randomSuffix } from '../shared/ids.js';
import { agentRequest, agentSocketPath, readAgentRecord, startAgent } from './agent-client.js';
import { bootId, groupMembers, isDead, isQuiesced, isStopped, readProcStat } from './procfs.js';
import { deleteSandboxFile, readSandboxFile, writeSandboxFile } from './sandbox-files.js';
import { assertSandboxId, TEMPLATE_NAME_RE } from './sandbox-paths.js';
import type { ExecResult, ProcessState, SandboxRuntime, SandboxSpec } from './runtime.js';
import { removeTree } from './remove-tree.js';
import * as rootSwap from './root-swap.js';

const execFileAsync = promisify(execFile);

const AGENT_START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const KILL_TIMEOUT_MS = 5_000;

export interface LocalSandboxRuntimeOptions {
  /** Holds one directory per sandbox. */
  baseDir: string;
  /** Holds one directory per template, copied into a new sandbox's root. */
  templatesDir: string;
}

/** The sandbox's process group: the agent's pid is its pgid. */
interface ProcessGroup {
  pgid: number;
  agentAlive: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
}

async function pathExists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/**
 * A sandbox is a directory plus the process group of its agent (see agent.mjs). All state lives on disk
 * and in /proc, so a new instance in a restarted worker finds the same sandboxes and processes.
 */
export class LocalSandboxRuntime implements SandboxRuntime {
  private readonly baseDir: string;
  private readonly templatesDir: string;
  private readonly agentStarts = new Map<string, Promise<string>>();

  constructor(opts: LocalSandboxRuntimeOptions) {
    this.baseDir = path.resolve(opts.baseDir);
    this.templatesDir = path.resolve(opts.templatesDir);
  }

  sandboxDir(id: string): string {
    assertSandboxId(id);
    return path.join(this.baseDir, id);
  }

  rootDir(id: string): string {
    return path.join(this.sandboxDir(id), 'root');
  }

  snapshotTree(id: string): string {
    return this.rootDir(id);
  }

  async scratchDir(id: string, name: string): Promise<string> {
    const dir = this.scratchPath(id, name);
    // Operations on a sandbox never overlap, so whatever is here is what a crashed attempt left.
    await fs.rm(dir, { recursive: true, force: true });
    await fs.mkdir(dir, { recursive: true });
    return dir;
  }

  async removeScratch(id: string, name: string): Promise<void> {
    await fs.rm(this.scratchPath(id, name), { recursive: true, force: true });
  }

  /** Beside the root: same filesystem (renames, no copies) and removed with the sandbox. */
  private scratchPath(id: string, name: string): string {
    if (!/^[a-z0-9-]{1,40}$/.test(name)) throw new Error(`invalid scratch name ${JSON.stringify(name)}`);
    return path.join(this.sandboxDir(id), name);
  }

  prepareStaging(id: string, operationId: string): Promise<string> {
    return rootSwap.prepareStaging(this.sandboxDir(id), operationId);
  }

  discardStaging(id: string, operationId: string): Promise<void> {
    return rootSwap.removeStaging(this.sandboxDir(id), operationId);
  }

  swapIn(id: string, operationId: string): Promise<void> {
    return rootSwap.swapIn(this.sandboxDir(id), operationId);
  }

  rollbackSwap(id: string, operationId: string): Promise<void> {
    return rootSwap.rollbackSwap(this.sandboxDir(id), operationId);
  }

  retireSwap(id: string, operationId: string): Promise<void> {
    return rootSwap.retireSwap(this.sandboxDir(id), operationId);
  }

  removeRetired(id: string, operationId: string): Promise<void> {
    return rootSwap.removeDiscarded(this.sandboxDir(id), operationId);
  }

  async exists(id: string): Promise<boolean> {
    return pathExists(this.rootDir(id));
  }

  async create(spec: SandboxSpec): Promise<void> {
    const dir = this.sandboxDir(spec.id);
    const template = await this.templateDir(spec.template);
    if (await this.exists(spec.id)) return;
    await fs.mkdir(dir, { recursive: true });
    await this.removeLeftoverCopies(dir);
    // Copy beside the root and rename, so a crash mid-copy never leaves a root that looks complete.
    const staging = path.join(dir, `root.creating-${randomSuffix(8)}`);
    await fs.cp(template, staging, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true, errorOnExist: true, force: false });
    try {
      await fs.rename(staging, this.rootDir(spec.id));
    } catch (err) {
      await removeTree(staging);
      // A concurrent create won the race; its root is as good as ours.
      if (!(await this.exists(spec.id))) throw err;
    }
  }

  async createEmpty(id: string): Promise<void> {
    await fs.mkdir(this.rootDir(id), { recursive: true });
  }

  async destroy(id: string): Promise<void> {
    const dir = this.sandboxDir(id);
    const group = await this.processGroup(id);
    if (group) {
      signalGroup(group.pgid, 'SIGKILL');
      // Removing the files under processes that are still dying would race with their last writes.
      await waitUntil(async () => (await groupMembers(group.pgid)).length === 0, KILL_TIMEOUT_MS);
    }
    const socket = await agentSocketPath(dir);
    if (path.dirname(socket) !== dir) await fs.rm(socket, { force: true });
    await removeTree(dir);
  }

  async pause(id: string): Promise<void> {
    await this.requireRoot(id);
    const group = await this.processGroup(id);
    if (!group) return;
    signalGroup(group.pgid, 'SIGSTOP');
    // kill() only queues the signal; a process in the middle of a write stops once the write returns.
    const stopped = await waitUntil(async () => {
      const members = await groupMembers(group.pgid);
      return (await Promise.all(members.map(isQuiesced))).every(Boolean);
    }, STOP_TIMEOUT_MS);
    if (!stopped) throw new Error(`sandbox ${id}: processes did not stop within ${STOP_TIMEOUT_MS} ms`);
  }

  async resume(id: string): Promise<void> {
    await this.requireRoot(id);
    const group = await this.processGroup(id);
    if (group) signalGroup(group.pgid, 'SIGCONT');
  }

  async quiesce(id: string): Promise<void> {
    await this.pause(id);
    // syncfs on the root's filesystem: every write acknowledged before the stop is on disk.
    await execFileAsync('sync', ['-f', this.rootDir(id)]);
  }

  async processState(id: string): Promise<ProcessState> {
    const group = await this.processGroup(id);
    if (!group) return 'none';
    if (group.agentAlive) {
      const agent = await readProcStat(group.pgid);
      if (!agent || isDead(agent)) return 'none';
      return isStopped(agent) ? 'stopped' : 'running';
    }
    const members = await groupMembers(group.pgid);
    if (members.length === 0) return 'none';
    return members.every(isStopped) ? 'stopped' : 'running';
  }

  async exec(
    id: string,
    command: string[],
    opts: { background: boolean; timeoutMs?: number; signal?: AbortSignal },
  ): Promise<ExecResult | { pid: number }> {
    await this.requireRoot(id);
    if (!Array.isArray(command) || command.length === 0 || !command.every((c) => typeof c === 'string' && !c.includes('\0'))) {
      throw new CagedError('invalid_input', 'command must be a non-empty array of strings');
    }
    if (opts.timeoutMs !== undefined && !(Number.isInteger(opts.timeoutMs) && opts.timeoutMs > 0)) {
      throw new CagedError('invalid_input', 'timeoutMs must be a positive integer');
    }
    // The agent is stopped with the rest of the group; a request to it would wait until resume.
    if ((await this.processState(id)) === 'stopped') throw new CagedError('invalid_state', 'sandbox is paused');
    const socket = await this.ensureAgent(id);
    const res = await agentRequest(socket, 'POST', '/exec', { command, background: opts.background, timeoutMs: opts.timeoutMs }, opts.signal);
    if (res.status === 200) return res.body as ExecResult | { pid: number };
    const error = (res.body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    const message = typeof error?.message === 'string' ? error.message : `sandbox agent answered ${res.status}`;
    if (isErrorCode(error?.code) && error.code !== 'internal') throw new CagedError(error.code, message);
    throw new Error(message);
  }

  async writeFile(id: string, relPath: string, body: Readable): Promise<void> {
    await writeSandboxFile(await this.requireRoot(id), relPath, body);
  }

  async readFile(id: string, relPath: string): Promise<Readable> {
    return readSandboxFile(await this.requireRoot(id), relPath);
  }

  async deleteFile(id: string, relPath: string): Promise<void> {
    await deleteSandboxFile(await this.requireRoot(id), relPath);
  }

  private async requireRoot(id: string): Promise<string> {
    const root = this.rootDir(id);
    if (!(await pathExists(root))) throw new CagedError('not_found', `sandbox ${id} does not exist`);
    return root;
  }

  private async templateDir(name: string): Promise<string> {
    const dir = path.join(this.templatesDir, name);
    const ok = TEMPLATE_NAME_RE.test(name) && (await fs.stat(dir).then((s) => s.isDirectory(), () => false));
    if (!ok) throw new CagedError('invalid_input', `unknown template ${JSON.stringify(name)}`);
    return dir;
  }

  private async removeLeftoverCopies(dir: string): Promise<void> {
    for (const entry of await fs.readdir(dir)) {
      if (entry.startsWith('root.creating-')) await removeTree(path.join(dir, entry));
    }
  }

  /**
   * Finds the sandbox's process group from agent.pid. The boot id and start time guard against a pid
   * that a later process reuses. With the agent dead, survivors still carry its pid as their pgid (the
   * kernel does not hand that pid out again while they do), and the sandbox marker in their environment
   * confirms that they are ours.
   */
  private async processGroup(id: string): Promise<ProcessGroup | undefined> {
    const record = await readAgentRecord(this.sandboxDir(id));
    if (!record || record.bootId !== (await bootId())) return undefined;
    const agent = await readProcStat(record.pid);
    if (agent && agent.startTime !== record.startTime) return undefined;
    if (agent && !isDead(agent)) return { pgid: record.pid, agentAlive: true };
    const members = (await groupMembers(record.pid)).filter((m) => m.session === record.pid);
    if (members.length === 0) return undefined;
    const marker = `\0CAGED_SANDBOX_ID=${id}\0`;
    const marked = await Promise.all(
      members.map((m) => fs.readFile(`/proc/${m.pid}/environ`, 'latin1').then((env) => `\0${env}`.includes(marker), () => false)),
    );
    return marked.some(Boolean) ? { pgid: record.pid, agentAlive: false } : undefined;
  }

  /** Returns the agent's socket, starting the agent first if there is none (first exec, or after a reboot). */
  private ensureAgent(id: string): Promise<string> {
    let start = this.agentStarts.get(id);
    if (!start) {
      start = this.startAgentOnce(id).finally(() => this.agentStarts.delete(id));
      this.agentStarts.set(id, start);
    }
    return start;
  }

  private async startAgentOnce(id: string): Promise<string> {
    const dir = this.sandboxDir(id);
    const group = await this.processGroup(id);
    if (group?.agentAlive) return agentSocketPath(dir);
    if (group) {
      // Survivors of a dead agent cannot be moved into a new agent's session, and processes that
      // pause() cannot reach would make snapshots inconsistent.
      signalGroup(group.pgid, 'SIGKILL');
      await waitUntil(async () => (await groupMembers(group.pgid)).length === 0, KILL_TIMEOUT_MS);
    }
    await startAgent(id, dir);
    // agent.pid is written only after the agent listens, so a live record means the socket answers.
    const up = await waitUntil(async () => (await this.processGroup(id))?.agentAlive === true, AGENT_START_TIMEOUT_MS);
    if (!up) {
      const log = await fs.readFile(path.join(dir, 'agent.log'), 'utf8').catch(() => '');
      throw new Error(`sandbox ${id}: agent did not start within ${AGENT_START_TIMEOUT_MS} ms${log ? `: ${log.slice(-2000)}` : ''}`);
    }
    return agentSocketPath(dir);
  }
}
