// The per-sandbox agent. It is started as `node agent.mjs <id> <sandboxDir> <socketPath>` by
// `setsid --fork`, so it leads its own session and process group whose parent is init from birth:
// the group is orphaned from the start (no SIGHUP+SIGCONT surprise later), it outlives the worker that
// started it, and every command it spawns stays in its group, so one kill(-pgid) pauses the sandbox.
//
// Protocol: HTTP/1.1 over the unix socket, JSON bodies.
//   GET  /health -> 200 {pid}
//   POST /exec   {command: string[], background: boolean, timeoutMs?: number}
//        foreground -> 200 {exit_code, stdout, stderr}; background -> 200 {pid}
//   errors       -> 4xx/5xx {error: {code, message}}
// Plain JS with Node built-ins only: it runs under bare `node`, without the project's loaders.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const [id, sandboxDir, socketPath] = process.argv.slice(2);
if (!id || !sandboxDir || !socketPath) {
  process.stderr.write('usage: agent.mjs <id> <sandboxDir> <socketPath>\n');
  process.exit(2);
}
const root = path.join(sandboxDir, 'root');
const OUTPUT_CAP = 1024 * 1024;
const REQUEST_CAP = 1024 * 1024;

// Sandbox processes share our group, so a `kill 0` inside the sandbox reaches us too. Only SIGKILL
// (destroy) may end the agent. Spawned children get default dispositions back (libuv resets them).
for (const sig of ['SIGHUP', 'SIGINT', 'SIGQUIT', 'SIGTERM', 'SIGPIPE', 'SIGUSR2', 'SIGALRM', 'SIGVTALRM', 'SIGPROF']) {
  process.on(sig, () => {});
}

// Built from nothing, never from process.env: the service's secrets (operator token, URL secret,
// AWS keys, DATABASE_URL) must not reach sandbox processes. CAGED_SANDBOX_ID is the sandbox's own
// marker, which the runtime reads back from /proc to recognise the group's processes.
const childEnv = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: root,
  PWD: root,
  SHELL: '/bin/sh',
  LANG: 'C.UTF-8',
  TERM: 'dumb',
  CAGED_SANDBOX_ID: id,
};

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function send(res, status, body) {
  if (res.headersSent || res.destroyed) return;
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > REQUEST_CAP) throw new HttpError(413, 'too_large', 'request body too large');
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'invalid_input', 'request body is not JSON');
  }
}

function parseExec(body) {
  const { command, background, timeoutMs } = body ?? {};
  if (!Array.isArray(command) || command.length === 0 || !command.every((c) => typeof c === 'string' && !c.includes('\0'))) {
    throw new HttpError(400, 'invalid_input', 'command must be a non-empty array of strings');
  }
  if (timeoutMs !== undefined && !(Number.isInteger(timeoutMs) && timeoutMs > 0)) {
    throw new HttpError(400, 'invalid_input', 'timeoutMs must be a positive integer');
  }
  return { command, background: background === true, timeoutMs };
}

/** Keeps the first OUTPUT_CAP bytes and keeps draining after that, so a chatty child never blocks on a full pipe. */
function collector(stream) {
  const chunks = [];
  let size = 0;
  let truncated = false;
  stream.on('data', (chunk) => {
    if (size >= OUTPUT_CAP) {
      truncated = true;
      return;
    }
    const room = OUTPUT_CAP - size;
    if (chunk.length > room) truncated = true;
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    chunks.push(kept);
    size += kept.length;
  });
  return () => {
    const text = Buffer.concat(chunks).toString('utf8');
    return truncated ? `${text}\n[caged: output truncated at ${OUTPUT_CAP} bytes]\n` : text;
  };
}

function spawnFailure(err, command) {
  // Shell conventions: 127 for a missing program, 126 for one that cannot be executed.
  const exit_code = err.code === 'ENOENT' ? 127 : 126;
  return { exit_code, stdout: '', stderr: `caged: ${command[0]}: ${err.message}\n` };
}

function assertRoot() {
  if (!fs.existsSync(root)) throw new HttpError(404, 'not_found', 'sandbox root does not exist');
}

function execBackground(command) {
  assertRoot();
  return new Promise((resolve, reject) => {
    const child = spawn(command[0], command.slice(1), { cwd: root, env: childEnv, stdio: 'ignore' });
    // Node reaps the child when it exits; nothing else has to wait for it.
    child.on('error', (err) => reject(new HttpError(400, 'invalid_input', spawnFailure(err, command).stderr.trim())));
    if (child.pid !== undefined) resolve({ pid: child.pid });
  });
}

function execForeground(command, timeoutMs, res) {
  assertRoot();
  return new Promise((resolve) => {
    const child = spawn(command[0], command.slice(1), { cwd: root, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    const stdout = collector(child.stdout);
    const stderr = collector(child.stderr);
    let timedOut = false;
    let settled = false;
    const timer = timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, timeoutMs)
      : undefined;
    // A caller that goes away (abort, timeout on its side) should not leave the command running.
    res.on('close', () => {
      if (!res.writableFinished && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });

    const finish = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    child.on('error', (err) => finish(spawnFailure(err, command)));
    child.on('exit', (code, signal) => {
      const exit_code = timedOut ? 124 : (code ?? 128 + (os.constants.signals[signal] ?? 0));
      const done = () => {
        const err = stderr();
        finish({ exit_code, stdout: stdout(), stderr: timedOut ? `${err}caged: command timed out after ${timeoutMs} ms\n` : err });
      };
      // A grandchild left in the background may hold the pipes open forever; give the output a moment, then answer.
      const grace = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        done();
      }, 200);
      child.once('close', () => {
        clearTimeout(grace);
        done();
      });
    });
  });
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.method === 'GET' && req.url === '/health') return send(res, 200, { pid: process.pid });
    if (req.method === 'POST' && req.url === '/exec') {
      const { command, background, timeoutMs } = parseExec(await readJson(req));
      const result = background ? await execBackground(command) : await execForeground(command, timeoutMs, res);
      return send(res, 200, result);
    }
    send(res, 404, { error: { code: 'not_found', message: `no route ${req.method} ${req.url}` } });
  } catch (err) {
    if (err instanceof HttpError) return send(res, err.status, { error: { code: err.code, message: err.message } });
    send(res, 500, { error: { code: 'internal', message: String(err?.message ?? err) } });
  }
});

function procStartTime() {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

/** Written only once we listen, so a runtime that sees it can connect. Lines: pid, boot id, start time. */
function writePidFile() {
  const bootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const file = path.join(sandboxDir, 'agent.pid');
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${process.pid}\n${bootId}\n${procStartTime()}\n`);
  fs.renameSync(tmp, file);
}

function isAnswering(sock) {
  return new Promise((resolve) => {
    const s = net.connect(sock);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function listen(retried = false) {
  try {
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    if (err.code !== 'EADDRINUSE' || retried) throw err;
    // Two runtimes may race to start an agent; the one already answering wins and this one leaves.
    if (await isAnswering(socketPath)) process.exit(0);
    fs.rmSync(socketPath, { force: true });
    return listen(true);
  }
  fs.chmodSync(socketPath, 0o600);
}

await listen();
writePidFile();

// If the sandbox directory disappears without a destroy (someone removed it by hand), take the
// whole group down rather than leak processes nobody can find any more.
setInterval(() => {
  if (!fs.existsSync(sandboxDir)) process.kill(0, 'SIGKILL');
}, 5000);
