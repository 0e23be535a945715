import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { transcodeFromGzip, transcodeToGzip } from '../src/archive/snapshot-format.js';

/** Every live descendant of this process, by walking /proc's parent links. */
function descendants(): { pid: number; comm: string }[] {
  const parent = new Map<number, number>();
  const comm = new Map<number, string>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const [state, ppid] = stat.slice(close + 2).split(' ');
      if (state === 'Z') continue;
      parent.set(Number(name), Number(ppid));
      comm.set(Number(name), stat.slice(stat.indexOf('(') + 1, close));
    } catch {
      /* gone meanwhile */
    }
  }
  const out: { pid: number; comm: string }[] = [];
  for (const pid of parent.keys()) {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) {
      if (p === process.pid) {
        out.push({ pid, comm: comm.get(pid)! });
        break;
      }
    }
  }
  return out;
}

const alive = (pid: number) => fs.existsSync(`/proc/${pid}`) && !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));

const zstdOf = (data: Buffer) => execFileSync('zstd', ['-1', '-q', '-c'], { input: data, maxBuffer: 64 * 1024 * 1024 });

const CASES = [
  { name: 'export (zstd | gzip)', start: transcodeToGzip, tools: /^(zstd|gzip|pigz)$/, encode: (d: Buffer) => zstdOf(d) },
  { name: 'import (gzip | zstd)', start: transcodeFromGzip, tools: /^(zstd|gzip)$/, encode: (d: Buffer) => gzipSync(d, { level: 1 }) },
];

describe.each(CASES)('the $name transcoder', ({ start, tools, encode }) => {
  it('kill() stops every process of the pipeline, even one blocked on a full pipe', async () => {
    const t = start();
    t.input.on('error', () => {});
    // Nobody reads the output: once the pipes fill, the tools block writing and never exit on their own.
    const input = encode(randomBytes(8 * 1024 * 1024));
    t.input.write(input);
    let procs: { pid: number; comm: string }[] = [];
    for (let i = 0; i < 100 && procs.length < 2; i++) {
      await new Promise((r) => setTimeout(r, 20));
      procs = descendants().filter((p) => tools.test(p.comm));
    }
    expect(procs).toHaveLength(2);
    await new Promise((r) => setTimeout(r, 300));
    t.kill();
    const settled = await Promise.race([t.done.then(() => 'resolved', (e: Error) => e.message), new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    expect(settled).toMatch(/SIGKILL/);
    for (const p of procs) expect(alive(p.pid), `${p.comm} ${p.pid}`).toBe(false);
  });
});
