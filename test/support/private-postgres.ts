/**
 * A PostgreSQL cluster of a test's own, which it may stop and start at will: the outage tests take
 * the catalog away from a running stack. It never touches the shared cluster on 5432.
 *
 * The binaries come from /usr/lib/postgresql/<newest>/bin (or CAGED_TEST_PG_BIN). PostgreSQL
 * refuses to run as root, so under root (CI) every command runs as the `postgres` user (or
 * `nobody`) through runuser, in a temporary directory that user owns.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../src/runtime/child-process.js';

const run = promisify(execFile);

export interface PrivatePostgres {
  /** postgres://postgres@127.0.0.1:PORT/postgres (trust auth). */
  url: string;
  port: number;
  dir: string;
  logFile: string;
  /** pg_ctl start, waiting until it accepts connections. */
  start(): Promise<void>;
  /** pg_ctl stop -m fast (terminates every session with 57P01, as an operator's restart does). */
  stop(): Promise<void>;
  running(): Promise<boolean>;
  /** Stops it (immediate) and removes its files. */
  destroy(): Promise<void>;
}

function binDir(): string {
  if (process.env.CAGED_TEST_PG_BIN) return process.env.CAGED_TEST_PG_BIN;
  const base = '/usr/lib/postgresql';
  const versions = fs.existsSync(base) ? fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, 'bin', 'pg_ctl'))) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (!versions[0]) throw new Error(`no PostgreSQL server binaries under ${base} (install postgresql, or set CAGED_TEST_PG_BIN)`);
  return path.join(base, versions[0], 'bin');
}

function runAsUser(): { name: string; uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  for (const name of ['postgres', 'nobody']) {
    const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
    if (line) {
      const [, , uid, gid] = line.split(':');
      return { name, uid: Number(uid), gid: Number(gid) };
    }
  }
  throw new Error('running as root, and neither a postgres nor a nobody user exists to run PostgreSQL');
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = binDir();
  const user = runAsUser();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'caged-pg-'));
  const data = path.join(dir, 'data');
  const logFile = path.join(dir, 'postgres.log');
  if (user) fs.chownSync(dir, user.uid, user.gid);
  const pg = async (tool: string, args: string[]) => {
    const [cmd, argv] = user ? ['runuser', ['-u', user.name, '--', path.join(bin, tool), ...args]] : [path.join(bin, tool), args];
    return run(cmd, argv, { cwd: dir, timeout: 120_000 });
  };
  await pg('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  const options = [`-p ${port}`, `-k ${dir}`, `-c listen_addresses=127.0.0.1`, '-c fsync=off', '-c full_page_writes=off', '-c max_connections=100'].join(' ');
  const self: PrivatePostgres = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dir,
    logFile,
    async start() {
      await pg('pg_ctl', ['-D', data, '-l', logFile, '-o', options, '-w', '-t', '60', 'start']);
    },
    async stop() {
      await pg('pg_ctl', ['-D', data, '-m', 'fast', '-w', '-t', '60', 'stop']);
    },
    async running() {
      try {
        await pg('pg_ctl', ['-D', data, 'status']);
        return true;
      } catch {
        return false;
      }
    },
    async destroy() {
      if (await self.running()) await pg('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await self.start();
  } catch (err) {
    await self.destroy();
    throw err;
  }
  return self;
}
