import fs from 'node:fs';

/** Reads /proc/<pid>/status fields in kB; undefined once the process is gone. */
export function procStatusKb(pid: number, field: 'VmHWM' | 'VmRSS'): number | undefined {
  try {
    const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Resets the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0, clear_refs value 5). */
export function resetPeakRss(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** CPU seconds of a process: its own, and that of its children it has already reaped. */
export function procCpuSeconds(pid: number): { self: number; children: number } | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised comm, which may itself contain spaces.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const tick = 100; // USER_HZ on Linux
    const n = (i: number) => Number(f[i - 3]);
    return { self: (n(14) + n(15)) / tick, children: (n(16) + n(17)) / tick };
  } catch {
    return undefined;
  }
}

function comm(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Reads a file of each of the process's threads; threads that end meanwhile are skipped. */
function perThread<T>(pid: number, file: string, read: (text: string, tid: string) => T): T[] {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  return tids.flatMap((tid) => {
    try {
      return [read(fs.readFileSync(`/proc/${pid}/task/${tid}/${file}`, 'utf8'), tid)];
    } catch {
      return [];
    }
  });
}

function childrenOf(pid: number): number[] {
  return perThread(pid, 'children', (text) => text.trim().split(' ').filter(Boolean).map(Number)).flat();
}

/**
 * Samples the peak RSS of the tar/zstd processes below `root` (they are separate programs, not
 * the worker). For each one seen it keeps its last VmHWM; peakKb is the largest sum over the
 * processes alive at one sample, an estimate of what the children held at once.
 */
export class ChildRssSampler {
  private timer?: NodeJS.Timeout;
  private readonly hwm = new Map<number, { comm: string; kb: number }>();
  peakSumKb = 0;

  constructor(
    private readonly root: number,
    private readonly names = new Set(['tar', 'zstd']),
    private readonly everyMs = 200,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.sample(), this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.sample();
  }

  private sample(): void {
    let sum = 0;
    const walk = (pid: number) => {
      for (const c of childrenOf(pid)) {
        const name = comm(c);
        if (name && this.names.has(name)) {
          const kb = procStatusKb(c, 'VmHWM');
          if (kb !== undefined) {
            this.hwm.set(c, { comm: name, kb });
            sum += kb;
          }
        }
        if (name !== 'temporal') walk(c);
      }
    };
    walk(this.root);
    if (sum > this.peakSumKb) this.peakSumKb = sum;
  }

  /** Largest VmHWM per program name, in kB. */
  maxByName(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const { comm: name, kb } of this.hwm.values()) out[name] = Math.max(out[name] ?? 0, kb);
    return out;
  }
}

/** CPU seconds per thread of a process, keyed by "name/tid". */
export function threadCpuSeconds(pid: number): Map<string, number> {
  return new Map(
    perThread(pid, 'stat', (stat, tid) => {
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return [`${name}/${tid}`, (Number(f[11]) + Number(f[12])) / 100] as const;
    }),
  );
}

/** The largest per-thread CPU increases between two threadCpuSeconds() readings. */
export function topThreadDeltas(before: Map<string, number>, after: Map<string, number>, n = 4): string {
  return [...after]
    .map(([name, cpu]) => [name, cpu - (before.get(name) ?? 0)] as const)
    .filter(([, d]) => d >= 0.05)
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, d]) => `${name} ${d.toFixed(2)}`)
    .join(', ');
}
