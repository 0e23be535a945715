import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { temporalCliPath } from './tools.js';
import { portInUse, waitForPort, stopChild } from './child-process.js';
import { SEARCH_ATTRIBUTES } from '../shared/definitions.js';

export interface DevServerOptions {
  port: number;
  uiPort?: number;
  /** SQLite file; in memory without it. */
  dbFile?: string;
  headless?: boolean;
  namespace?: string;
  logFile?: string;
  /** More `--dynamic-config-value KEY=VALUE` settings (tests lower history limits with them). */
  dynamicConfig?: string[];
}

export interface DevServer {
  address: string;
  uiUrl?: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Runs `temporal server start-dev` as a child process with caged's search attributes registered. */
export async function startTemporalDevServer(opts: DevServerOptions): Promise<DevServer> {
  const cli = temporalCliPath();
  const uiPort = opts.uiPort ?? opts.port + 1000;
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(opts.port), '--log-level', 'warn'];
  if (opts.headless) args.push('--headless');
  else args.push('--ui-port', String(uiPort));
  if (opts.dbFile) {
    fs.mkdirSync(path.dirname(opts.dbFile), { recursive: true });
    args.push('--db-filename', opts.dbFile);
  }
  if (opts.namespace && opts.namespace !== 'default') args.push('--namespace', opts.namespace);
  for (const name of Object.values(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${name}=Keyword`);
  // Lets the sandbox workflow take Updates-with-Start and keeps history small in tests.
  args.push('--dynamic-config-value', 'frontend.enableUpdateWorkflowExecution=true');
  for (const v of opts.dynamicConfig ?? []) args.push('--dynamic-config-value', v);
  // Something already listening there would be taken for this server, which then exits at once.
  if (await portInUse('127.0.0.1', opts.port)) {
    throw new Error(`port ${opts.port} is already in use (a Temporal dev server left behind by a caged dev that was killed?); stop it or set CAGED_TEMPORAL_PORT`);
  }
  const out = opts.logFile ? fs.openSync(opts.logFile, 'a') : 'ignore';
  // setpriv --pdeathsig: the server goes when its parent does, even when the parent is SIGKILLed
  // (a graceful stop stops it too); util-linux, like the setsid the sandbox runtime needs.
  const child = spawn('setpriv', ['--pdeathsig', 'TERM', '--', cli, ...args], { stdio: ['ignore', out, out] });
  if (typeof out === 'number') fs.closeSync(out);
  try {
    await waitForPort('127.0.0.1', opts.port, 60_000, child);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    address: `127.0.0.1:${opts.port}`,
    uiUrl: opts.headless ? undefined : `http://127.0.0.1:${uiPort}`,
    child,
    stop: () => stopChild(child),
  };
}
