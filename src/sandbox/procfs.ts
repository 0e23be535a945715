import fs from 'node:fs/promises';

/** The fields of /proc/<pid>/stat that the local runtime needs. */
export interface ProcStat {
  pid: number;
  state: string;
  pgrp: number;
  session: number;
  /** Clock ticks after boot; with the boot id it tells a process apart from a later one that reuses its pid. */
  startTime: string;
}

/** Parses a /proc/<pid>/stat line. The command name may hold spaces and parentheses, so split after its last ')'. */
export function parseProcStat(line: string): ProcStat | undefined {
  const close = line.lastIndexOf(')');
  if (close < 0) return undefined;
  const pid = Number.parseInt(line, 10);
  // Fields after the name start at field 3 (state); starttime is field 22.
  const rest = line.slice(close + 2).split(' ');
  const [state, , pgrp, session] = rest;
  const startTime = rest[19];
  if (!state || !pgrp || !session || !startTime) return undefined;
  return { pid, state, pgrp: Number(pgrp), session: Number(session), startTime };
}

export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  try {
    return parseProcStat(await fs.readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** A zombie has finished running; it only waits for a parent that may never reap it (a container's pid 1). */
export function isDead(stat: ProcStat): boolean {
  return stat.state === 'Z' || stat.state === 'X' || stat.state === 'x';
}

export function isStopped(stat: ProcStat): boolean {
  return stat.state === 'T' || stat.state === 't';
}

const SIGSTOP_BIT = 1n << 18n;

/**
 * Stopped, or as good as stopped: a parent caught in vfork() (state D) while its child is stopped
 * before exec cannot take the SIGSTOP until SIGCONT, yet it runs no code in the meantime.
 */
export async function isQuiesced(stat: ProcStat): Promise<boolean> {
  if (isStopped(stat)) return true;
  if (stat.state !== 'D') return false;
  try {
    const status = await fs.readFile(`/proc/${stat.pid}/status`, 'utf8');
    const pending = [...status.matchAll(/^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$/gm)].map((m) => BigInt(`0x${m[1]}`));
    return pending.some((mask) => (mask & SIGSTOP_BIT) !== 0n);
  } catch {
    return true; // gone meanwhile
  }
}

/** Every live (non-zombie) process in the process group, found by scanning /proc. */
export async function groupMembers(pgid: number): Promise<ProcStat[]> {
  const entries = await fs.readdir('/proc');
  const stats = await Promise.all(entries.filter((e) => /^\d+$/.test(e)).map((e) => readProcStat(Number(e))));
  return stats.filter((s): s is ProcStat => s !== undefined && s.pgrp === pgid && !isDead(s));
}

let cachedBootId: string | undefined;

export async function bootId(): Promise<string> {
  cachedBootId ??= (await fs.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  return cachedBootId;
}
