/** Output helpers shared by the CLI commands; pure so they can be tested to the character. */

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'] as const;

/** Decimal units, as disks and S3 report sizes; three significant digits is what a human reads anyway. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (n < 0) return `-${formatBytes(-n)}`;
  let unit = 0;
  let value = n;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  let rounded = Number(value.toPrecision(3));
  // 999_999 B rounds to 1000 KB; carry it so the number never shows four digits.
  if (rounded >= 1000 && unit < UNITS.length - 1) {
    rounded = Number((rounded / 1000).toPrecision(3));
    unit++;
  }
  return `${unit === 0 ? Math.round(n) : rounded} ${UNITS[unit]}`;
}

export function formatAge(date: Date | string | number, now: Date | number = Date.now()): string {
  const then = date instanceof Date ? date.getTime() : new Date(date).getTime();
  const nowMs = now instanceof Date ? now.getTime() : now;
  if (Number.isNaN(then)) return '-';
  const seconds = (nowMs - then) / 1000;
  // Clock skew between the API host and this machine can put timestamps slightly in the future.
  if (seconds < 45) return 'just now';
  const plural = (count: number, word: string) => `${count} ${word}${count === 1 ? '' : 's'} ago`;
  if (seconds < 3600) return plural(Math.max(1, Math.floor(seconds / 60)), 'minute');
  if (seconds < 86_400) return plural(Math.floor(seconds / 3600), 'hour');
  return plural(Math.floor(seconds / 86_400), 'day');
}

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    widths
      .map((w, i) => (cells[i] ?? '').padEnd(w))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export interface FindingRow {
  check: string;
  subject: string;
  detail: string;
  repairable: boolean;
  repaired?: boolean;
}

/** `caged admin verify`'s table; REPAIR says what --repair did or would do. */
export function findingsTable(findings: FindingRow[]): string {
  const repair = (f: FindingRow) => (f.repaired === true ? 'repaired' : f.repaired === false ? 'failed' : f.repairable ? 'repairable' : 'no');
  return table(
    ['CHECK', 'SUBJECT', 'REPAIR', 'DETAIL'],
    findings.map((f) => [f.check, f.subject, repair(f), f.detail]),
  );
}

/** 850 ms, 2.3 s, 4m 05s: the precision a timeline needs. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
}

export interface TimelineView {
  status: string;
  started_at?: string;
  entries: {
    kind: string;
    name: string;
    status: string;
    attempts?: number;
    started_at: string;
    duration_ms?: number;
    failures: { attempt?: number; message: string; type?: string }[];
  }[];
  failure?: { message: string; type?: string };
}

const KIND_LABEL: Record<string, string> = { activity: 'activity', local_activity: 'local', step: 'step', event: 'event' };

/**
 * `caged ops show`'s timeline: one row per step and activity, times relative to the workflow's
 * start, and under each activity the error of every failed attempt the history kept.
 */
export function timelineTable(t: TimelineView): string {
  const t0 = t.started_at ? Date.parse(t.started_at) : t.entries[0] ? Date.parse(t.entries[0].started_at) : 0;
  const rows = t.entries.map((e) => [
    `+${formatDuration(Date.parse(e.started_at) - t0)}`,
    KIND_LABEL[e.kind] ?? e.kind,
    e.kind === 'step' && e.name === 'reportStep' ? '(step; name not in history)' : e.name,
    e.kind === 'step' ? '' : e.status,
    e.attempts === undefined || e.kind === 'step' ? '' : String(e.attempts),
    e.duration_ms === undefined || e.kind === 'step' ? '' : formatDuration(e.duration_ms),
  ]);
  const lines = table(['AT', 'KIND', 'NAME', 'STATUS', 'ATTEMPTS', 'DURATION'], rows).split('\n');
  const out = [lines[0]!];
  t.entries.forEach((e, i) => {
    out.push(lines[i + 1]!);
    for (const f of e.failures) {
      out.push(`    ${f.attempt === undefined ? 'an attempt' : `attempt ${f.attempt}`} failed: ${f.type ? `${f.type}: ` : ''}${f.message}`);
    }
  });
  out.push(`workflow: ${t.status}${t.failure ? ` (${t.failure.type ? `${t.failure.type}: ` : ''}${t.failure.message})` : ''}`);
  return out.join('\n');
}
