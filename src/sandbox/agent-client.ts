import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const AGENT_SCRIPT = fileURLToPath(new URL('./agent.mjs', import.meta.url));

/** What the agent writes to agent.pid once it listens: enough to tell it from a later process with its pid. */
export interface AgentRecord {
  pid: number;
  bootId: string;
  startTime: string;
}

export async function readAgentRecord(sandboxDir: string): Promise<AgentRecord | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path.join(sandboxDir, 'agent.pid'), 'utf8');
  } catch {
    return undefined;
  }
  const [pid, bootId, startTime] = text.split('\n');
  const n = Number(pid);
  if (!Number.isInteger(n) || n <= 1 || !bootId || !startTime) return undefined;
  return { pid: n, bootId, startTime };
}

// sun_path holds 108 bytes on Linux; keep a margin.
const MAX_SOCKET_PATH = 100;
const SOCKET_PATH_FILE = 'agent.sockpath';

/**
 * The agent's socket sits beside the root unless that path is too long for a unix socket; then it goes
 * to the temp directory, and the choice is written down so that a runtime with another TMPDIR finds it.
 */
export async function agentSocketPath(sandboxDir: string): Promise<string> {
  try {
    const recorded = (await fs.readFile(path.join(sandboxDir, SOCKET_PATH_FILE), 'utf8')).trim();
    if (recorded) return recorded;
  } catch {
    // Nothing recorded: the default applies.
  }
  const beside = path.join(sandboxDir, 'agent.sock');
  if (Buffer.byteLength(beside) <= MAX_SOCKET_PATH) return beside;
  const hash = createHash('sha256').update(sandboxDir).digest('hex').slice(0, 24);
  return path.join(os.tmpdir(), `caged-agent-${hash}.sock`);
}

/** Starts the agent in a new session whose leader's parent is init; resolves once `setsid` has forked. */
export async function startAgent(id: string, sandboxDir: string): Promise<void> {
  const socketPath = await agentSocketPath(sandboxDir);
  if (path.dirname(socketPath) !== sandboxDir) await fs.writeFile(path.join(sandboxDir, SOCKET_PATH_FILE), `${socketPath}\n`);
  const log = await fs.open(path.join(sandboxDir, 'agent.log'), 'a');
  try {
    const child = spawn('setsid', ['--fork', process.execPath, AGENT_SCRIPT, id, sandboxDir, socketPath], {
      cwd: sandboxDir,
      // Not the caller's environment: NODE_OPTIONS loaders or secrets must not reach the agent or the sandbox.
      env: { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', CAGED_SANDBOX_ID: id },
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
    });
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (c) => resolve(c));
    });
    if (code !== 0) throw new Error(`setsid exited with code ${code} while starting the sandbox agent`);
  } finally {
    await log.close();
  }
}

export interface AgentResponse {
  status: number;
  body: unknown;
}

export function agentRequest(socketPath: string, method: string, urlPath: string, body?: unknown, signal?: AbortSignal): Promise<AgentResponse> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      {
        socketPath,
        method,
        path: urlPath,
        // No pooled keep-alive sockets: they would hold a stopped agent's connection and keep the caller's loop alive.
        agent: false,
        signal,
        headers: data ? { 'content-type': 'application/json', 'content-length': data.length } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined });
          } catch {
            reject(new Error(`sandbox agent answered ${res.statusCode} with a body that is not JSON`));
          }
        });
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}
