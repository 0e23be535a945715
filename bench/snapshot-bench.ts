/**
 * Snapshot/restore throughput and worker memory of caged, next to plain tar | zstd.
 *
 *   npm run bench                       # 1 GiB and 4 GiB, 2 rounds each
 *   BENCH_SIZES=1 npm run bench         # 1 GiB only (BENCH_ROUNDS=1 for a single round)
 *   npm run bench -- --size 2 --rounds 3 --keep
 *   npm run bench -- --dev              # measure `caged dev` (PGlite, all in one process)
 *
 * For each size, fresh caged processes (bench/stack.ts: by default a Temporal dev server,
 * `caged api` and `caged worker` on a fresh PostgreSQL database; own data dir under .bench/, free
 * ports, so VmHWM starts from scratch) get one sandbox whose root is filled with a deterministic
 * mixed data set. On that tree:
 *   warm-up: tar | zstd -1 -T0 into an archive file (untimed; fills the page cache, and the
 *     archive is the restore baseline's input)
 *   then each round times, in this order (even rounds in the reverse order, so neither side always
 *   runs right after the other's writes and deletes):
 *     baseline snapshot  `tar -cf - DIR | zstd -1 -T0 > /dev/null`
 *     caged snapshot     POST /v1/sandboxes/{id}/snapshots, polled every 100 ms until it succeeds
 *     caged restore      POST /v1/snapshots/{id}/restore, polled the same way
 *     baseline restore   `zstd -d -c ARCHIVE | tar -xf - -C EMPTYDIR`
 *   and, for reference, the baseline writing its archive to a file and syncing it.
 * Throughput is tree bytes / seconds; each side's best round counts. The worker's VmHWM is reset
 * before each caged operation and read after it. `sync` runs before every timed step so no step
 * pays for an earlier step's writeback. It is a report: it exits 0 whether the targets are met or
 * not, and non-zero only on errors. BENCH_NODE_ARGS passes node flags to the worker (e.g. --cpu-prof).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateDataset, type DatasetSummary } from './dataset.js';
import { ChildRssSampler, procCpuSeconds, procStatusKb, resetPeakRss, threadCpuSeconds, topThreadDeltas } from './proc.js';
import { startStack, type Stack, type StackMode } from './stack.js';
import { filesUnder, overwriteMiddle, touchSmallFiles } from './incremental.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BENCH_DIR = path.join(ROOT, '.bench');
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const TARGET_RATIO = 0.7;
const TARGET_RSS_MB = 300;
const POLL_MS = 100;
const GROWTH_TOLERANCE_MB = 50;

interface Args {
  /** split: api + worker processes on PostgreSQL (the production shape); dev: `caged dev` with PGlite. */
  mode: StackMode;
  /** The PostgreSQL server that gets a fresh catalog database per size (split mode). */
  databaseUrl: string;
  sizes: number[];
  rounds: number;
  keep: boolean;
  seed: number;
}

function parseArgs(argv: string[]): Args {
  const sizes: number[] = [];
  let keep = false;
  let seed = 1;
  let rounds = Number(process.env.BENCH_ROUNDS || 2);
  let databaseUrl = process.env.BENCH_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
  let mode: StackMode = process.env.BENCH_MODE === 'dev' ? 'dev' : 'split';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--size' || a.startsWith('--size=') || a === '--sizes' || a.startsWith('--sizes=')) sizes.push(...parseSizes(value()));
    else if (a === '--keep') keep = true;
    else if (a === '--dev') mode = 'dev';
    else if (a === '--database-url' || a.startsWith('--database-url=')) databaseUrl = value();
    else if (a === '--rounds' || a.startsWith('--rounds=')) rounds = Number(value());
    else if (a === '--seed' || a.startsWith('--seed=')) seed = Number(value());
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: npm run bench -- [--size GIB]... [--rounds N] [--database-url URL] [--dev] [--keep] [--seed N]\n       (or BENCH_SIZES=1,4 BENCH_ROUNDS=2 BENCH_DATABASE_URL=postgres://... BENCH_MODE=dev)\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (sizes.length === 0) sizes.push(...parseSizes(process.env.BENCH_SIZES || '1,4'));
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) throw new Error(`bad --rounds ${rounds}`);
  return { mode, databaseUrl, sizes, rounds, keep, seed };
}

function parseSizes(s: string): number[] {
  return s.split(',').map((x) => {
    const n = Number(x.trim());
    if (!Number.isFinite(n) || n <= 0 || n > 64) throw new Error(`bad size ${JSON.stringify(x)} (GiB, e.g. 1 or 0.5)`);
    return n;
  });
}

// ---------------------------------------------------------------- helpers

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mib = (b: number) => b / MiB;
const fmt = (n: number, d = 1) => n.toFixed(d);
/** Three decimals, truncated: a ratio just under a target never prints as the target. */
const ratio = (r: number) => (Math.floor(r * 1000) / 1000).toFixed(3);

function log(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

function syncDisks(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

/**
 * Whether the page cache can be dropped (root on Linux). Dropped before each timed step, every
 * step starts from the same memory: nothing cached but its input. Otherwise the steps that write
 * (caged archives, restores) pay for reclaiming what earlier steps left, and the baseline snapshot,
 * which writes nothing, never does.
 */
let canDropCaches: boolean | undefined;

function dropPageCache(): void {
  syncDisks();
  if (canDropCaches === false) return;
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
    canDropCaches = true;
  } catch {
    canDropCaches = false;
    log('note: cannot drop the page cache (not root?); steps start with whatever earlier steps left cached');
  }
}

/** The common start of every timed step: a clean page cache, its input read back in, no dirty pages. */
async function startFrom(warmInput: () => Promise<unknown>): Promise<void> {
  dropPageCache();
  await warmInput();
  syncDisks();
}

/** Bytes of regular files (and symlink targets' lengths) under dir, and how many entries. */
function treeStats(dir: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        bytes += fs.lstatSync(p).size;
        files++;
      }
    }
  };
  walk(dir);
  return { bytes, files };
}

/** Runs a bash pipeline; returns wall seconds and the CPU seconds (user+sys) of its processes. */
async function timeShell(script: string): Promise<{ seconds: number; cpu: number }> {
  const started = performance.now();
  const child = spawn('bash', ['-c', `set -o pipefail\n${script}\ntimes`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((r) => child.once('close', r));
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`baseline failed (exit ${code}): ${script}\n${err.trim()}`);
  // `times`: line 1 is the shell itself, line 2 its children, as "XmY.YYYs XmY.YYYs".
  const lines = out.trim().split('\n');
  const cpu = (lines[lines.length - 1] ?? '')
    .split(/\s+/)
    .map((t) => /^(\d+)m([\d.]+)s$/.exec(t))
    .reduce((s, m) => s + (m ? Number(m[1]) * 60 + Number(m[2]) : 0), 0);
  return { seconds, cpu };
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

// ---------------------------------------------------------------- API

async function api<T>(dev: Stack, method: string, p: string, body?: unknown): Promise<T> {
  const res = await fetch(`${dev.url}${p}`, {
    method,
    headers: { authorization: `Bearer ${dev.key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p}: HTTP ${res.status} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

interface Operation {
  id: string;
  status: 'running' | 'succeeded' | 'failed' | 'cancelled';
  progress: { step: string; bytes_done: number };
  result?: Record<string, unknown>;
  error?: { code: string; message: string };
  created_at: string;
  finished_at?: string;
}

interface Measured {
  /** POST sent -> the operation's finished_at (the server's clock; same machine). */
  seconds: number;
  /** POST sent -> the poll that first saw it succeeded. */
  polledSeconds: number;
  /** VmRSS just before the POST (VmHWM was reset to it). */
  rssBeforeMb: number;
  workerPeakMb: number;
  childPeakMb: number;
  childByName: Record<string, number>;
  nodeCpu: number;
  childCpu: number;
  /** Where the worker's CPU went: the busiest thread names of the dev process. */
  threads: string;
  /** The progress steps the polls saw, with the seconds since the POST at which each was first seen. */
  steps: { step: string; at: number }[];
  op: Operation;
}

/** Runs one API operation from its POST to success, measuring time and memory around it. */
async function measureOperation(dev: Stack, start: () => Promise<Operation>): Promise<Measured> {
  const resetOk = resetPeakRss(dev.workerPid);
  if (!resetOk) log('warning: cannot reset VmHWM (clear_refs); the peak includes start-up');
  const rssBeforeKb = procStatusKb(dev.workerPid, 'VmRSS') ?? 0;
  const sampler = new ChildRssSampler(dev.workerPid);
  const cpu0 = procCpuSeconds(dev.workerPid)!;
  const threads0 = threadCpuSeconds(dev.workerPid);
  sampler.start();
  const postedAt = Date.now();
  const t0 = performance.now();
  let op = await start();
  const steps: { step: string; at: number }[] = [];
  const seeStep = () => {
    const step = op.status === 'running' ? op.progress.step : op.status;
    if (steps[steps.length - 1]?.step !== step) steps.push({ step, at: (performance.now() - t0) / 1000 });
  };
  seeStep();
  while (op.status === 'running') {
    await sleep(POLL_MS);
    op = await api<Operation>(dev, 'GET', `/v1/operations/${op.id}`);
    seeStep();
  }
  const polledSeconds = (performance.now() - t0) / 1000;
  sampler.stop();
  const cpu1 = procCpuSeconds(dev.workerPid)!;
  const threads = topThreadDeltas(threads0, threadCpuSeconds(dev.workerPid));
  const hwmKb = procStatusKb(dev.workerPid, 'VmHWM') ?? 0;
  if (op.status !== 'succeeded') throw new Error(`operation ${op.id} ${op.status}: ${op.error?.code ?? ''} ${op.error?.message ?? ''}`);
  const finished = op.finished_at ? Date.parse(op.finished_at) : NaN;
  const seconds = Number.isFinite(finished) && finished >= postedAt ? Math.min((finished - postedAt) / 1000, polledSeconds) : polledSeconds;
  return {
    seconds,
    polledSeconds,
    rssBeforeMb: rssBeforeKb / 1024,
    workerPeakMb: hwmKb / 1024,
    childPeakMb: sampler.peakSumKb / 1024,
    childByName: Object.fromEntries(Object.entries(sampler.maxByName()).map(([k, v]) => [k, v / 1024])),
    nodeCpu: cpu1.self - cpu0.self,
    childCpu: cpu1.children - cpu0.children,
    threads,
    steps,
    op,
  };
}

// ---------------------------------------------------------------- one size

interface Timed {
  seconds: number;
  cpu: number;
}

interface Round {
  baseSnap: Timed;
  baseRestore: Timed;
  /** Informational: the baseline writing its archive to a file and syncing it, as caged must. */
  baseDurable: Timed;
  snap: Measured;
  restore: Measured;
}

interface SizeResult {
  gib: number;
  data: DatasetSummary;
  treeBytes: number;
  treeFiles: number;
  archiveBytes: number;
  cagedArchiveBytes: number;
  startupPeakMb: number;
  idleRssMb: number;
  rounds: Round[];
  /** Restore over the original sandbox, which also removes its previous root (one run, last). */
  inPlace: Measured;
  incremental: IncrementalResult;
}

interface IncrementalStep {
  what: string;
  seconds: number;
  /** What the snapshot added to the store (new chunks and its manifest). */
  storedBytes: number;
  /** Bytes of the files changed since the previous snapshot. */
  changedBytes: number;
}

interface IncrementalResult {
  steps: IncrementalStep[];
  /** The series: this many snapshots of the sandbox, each after 1% of its small files changed. */
  snapshots: number;
  storedTotal: number;
}

const SERIES = 20;

/** Deletes a snapshot through the API and waits until it is gone (untimed housekeeping). */
async function deleteSnapshot(dev: Stack, snapshotId: string): Promise<void> {
  let { operation: op } = await api<{ operation: Operation }>(dev, 'DELETE', `/v1/snapshots/${snapshotId}`);
  while (op.status === 'running') {
    await sleep(POLL_MS);
    op = await api<Operation>(dev, 'GET', `/v1/operations/${op.id}`);
  }
  if (op.status !== 'succeeded') throw new Error(`deleting snapshot ${snapshotId}: ${op.status} ${op.error?.message ?? ''}`);
}

async function runSize(gib: number, args: Args, onDev: (d: Stack | undefined) => void): Promise<SizeResult> {
  const dir = path.join(BENCH_DIR, `size-${gib}g`);
  fs.mkdirSync(dir, { recursive: true });
  const dataDir = path.join(dir, 'caged');
  log(`${gib} GiB: starting ${args.mode === 'dev' ? 'caged dev' : 'Temporal, caged api and caged worker'} in ${path.relative(ROOT, dataDir)}`);
  const dev = await startStack(args.mode, { dataDir, adminDatabaseUrl: args.databaseUrl, label: String(gib).replace('.', '_'), log });
  onDev(dev);
  try {
    const sandbox = await api<{ id: string; state: string }>(dev, 'POST', '/v1/sandboxes', {});
    const root = path.join(dataDir, 'sandboxes', sandbox.id, 'root');
    if (!fs.existsSync(root)) throw new Error(`sandbox root ${root} does not exist; has the layout changed?`);
    const startupPeakMb = (procStatusKb(dev.workerPid, 'VmHWM') ?? 0) / 1024;

    log(`${gib} GiB: writing the data set into sandbox ${sandbox.id}`);
    const dataRoot = path.join(root, 'bench-data');
    fs.mkdirSync(dataRoot);
    const data = generateDataset(dataRoot, gib, args.seed);
    const tree = treeStats(root);
    log(`${gib} GiB: ${tree.files} files, ${fmt(mib(tree.bytes))} MiB written in ${fmt(data.seconds)} s; syncing`);
    syncDisks();
    const idleRssMb = (procStatusKb(dev.workerPid, 'VmRSS') ?? 0) / 1024;

    const archive = path.join(dir, 'baseline.tar.zst');
    const packCmd = `tar -C ${q(root)} -cf - . | zstd -1 -T0 -q`;
    log(`${gib} GiB: warm-up (baseline into ${path.basename(archive)})`);
    await timeShell(`${packCmd} > ${q(archive)}`);
    const archiveBytes = fs.statSync(archive).size;
    syncDisks();

    // Two quirks of this kind of VM are evened out (see bench/README.md). Page-cache pages left
    // cold for about a minute are paged out (DAMON), so each timed step's input is read just
    // before it. And ext4 without a journal will not reuse an inode for up to 5 minutes after its
    // deletion, which makes creating files near a recent mass delete several times slower; so
    // nothing is deleted until the very end: each restore, caged or baseline, goes into a new
    // place (a new sandbox for caged), and the in-place restore, which removes the old root, is
    // the last step.
    const warmTree = () => timeShell(`tar -C ${q(root)} -cf - . | cat > /dev/null`);
    const warmFile = async (f: string) => {
      if (fs.existsSync(f)) await timeShell(`cat ${q(f)} > /dev/null`);
      else log(`warning: ${f} not found to warm`);
    };
    const baselineSnapshot = async () => {
      log(`${gib} GiB: baseline snapshot`);
      await startFrom(warmTree);
      const t = await timeShell(`${packCmd} > /dev/null`);
      log(`${gib} GiB: baseline snapshot took ${fmt(t.seconds, 2)} s`);
      return t;
    };
    let snapshotId = '';
    let cagedArchiveBytes = 0;
    const cagedSnapshot = async () => {
      log(`${gib} GiB: caged snapshot`);
      await startFrom(warmTree);
      const m = await measureOperation(dev, async () => {
        const out = await api<{ snapshot: { id: string }; operation: Operation }>(dev, 'POST', `/v1/sandboxes/${sandbox.id}/snapshots`, { name: `bench-${Date.now()}` });
        return out.operation;
      });
      log(`${gib} GiB: caged snapshot took ${fmt(m.seconds, 2)} s`);
      snapshotId = String(m.op.result?.snapshot_id ?? '');
      // What the snapshot stored (new chunks and its manifest); size_bytes is what its files hold.
      const stored = await api<{ size_bytes: number; stored_bytes?: number }>(dev, 'GET', `/v1/snapshots/${snapshotId}`);
      cagedArchiveBytes ||= stored.stored_bytes ?? stored.size_bytes;
      return m;
    };
    /** Restores the latest snapshot into `target` (a new sandbox, or the original one in place). */
    const cagedRestore = async (target?: string) => {
      log(`${gib} GiB: caged restore ${target ? 'into a new sandbox' : 'in place'}`);
      // A chunked snapshot's bytes are in the account's packs.
      await startFrom(() => timeShell(`find ${q(path.join(dataDir, 'blobs', 'packs'))} -type f -exec cat {} + > /dev/null`));
      const m = await measureOperation(dev, async () => (await api<{ operation: Operation }>(dev, 'POST', `/v1/snapshots/${snapshotId}/restore`, target ? { to: target } : {})).operation);
      log(`${gib} GiB: caged restore took ${fmt(m.seconds, 2)} s`);
      const restored = treeStats(path.join(dataDir, 'sandboxes', target ?? sandbox.id, 'root'));
      if (restored.bytes !== tree.bytes || restored.files !== tree.files) {
        throw new Error(`restored tree differs: ${restored.files} files/${restored.bytes} bytes, expected ${tree.files}/${tree.bytes}`);
      }
      return m;
    };
    const newSandbox = async () => (await api<{ id: string }>(dev, 'POST', '/v1/sandboxes', {})).id;
    let restoreDirs = 0;
    const baselineRestore = async () => {
      log(`${gib} GiB: baseline restore`);
      const empty = path.join(dir, `baseline-restore-${++restoreDirs}`);
      fs.mkdirSync(empty);
      await startFrom(() => warmFile(archive));
      const t = await timeShell(`zstd -d -q -c ${q(archive)} | tar -xf - -C ${q(empty)}`);
      log(`${gib} GiB: baseline restore took ${fmt(t.seconds, 2)} s`);
      const check = treeStats(empty);
      if (check.bytes !== tree.bytes) throw new Error(`baseline restore wrote ${check.bytes} bytes, expected ${tree.bytes}`);
      return t;
    };

    const rounds: Round[] = [];
    for (let r = 0; r < args.rounds; r++) {
      log(`${gib} GiB: round ${r + 1} of ${args.rounds}`);
      // Odd rounds in the order baseline, caged, caged, baseline; even rounds the other way round,
      // so neither side always runs right after the other's writes.
      const forward = r % 2 === 0;
      const target = await newSandbox();
      let baseSnap: Timed, snap: Measured, restore: Measured, baseRestore: Timed;
      if (forward) {
        baseSnap = await baselineSnapshot();
        snap = await cagedSnapshot();
        restore = await cagedRestore(target);
        baseRestore = await baselineRestore();
      } else {
        snap = await cagedSnapshot();
        baseSnap = await baselineSnapshot();
        baseRestore = await baselineRestore();
        restore = await cagedRestore(target);
      }
      await startFrom(warmTree);
      const durableFile = path.join(dir, 'durable.tar.zst');
      const baseDurable = await timeShell(`${packCmd} > ${q(durableFile)} && sync ${q(durableFile)}`);
      fs.rmSync(durableFile, { force: true });
      // The last round's snapshot is kept for the in-place restore.
      if (r < args.rounds - 1) await deleteSnapshot(dev, snapshotId);
      syncDisks();
      rounds.push({ baseSnap, baseRestore, baseDurable, snap, restore });
    }
    const incremental = await incrementalPhase(dev, sandbox.id, dataRoot, warmTree, (id) => (snapshotId = id));
    const inPlace = await cagedRestore();
    return { gib, data, treeBytes: tree.bytes, treeFiles: tree.files, archiveBytes, cagedArchiveBytes, startupPeakMb, idleRssMb, rounds, inPlace, incremental };
  } finally {
    log(`${gib} GiB: stopping the caged processes`);
    await dev.stop();
    onDev(undefined);
  }
}

/**
 * Snapshots after small changes, each compared with the one before: nothing changed, 1% of the
 * small files rewritten, 1 MiB overwritten in a large file; then a series up to SERIES snapshots of
 * the sandbox (1% of the small files each time) and what they store together.
 */
async function incrementalPhase(dev: Stack, sandboxId: string, dataRoot: string, warmTree: () => Promise<unknown>, latest: (id: string) => void): Promise<IncrementalResult> {
  const files = filesUnder(dataRoot);
  const small = files.filter((f) => f.size < MiB);
  const large = files.reduce((a, b) => (b.size > a.size ? b : a));
  const snapshotNow = async (what: string, changedBytes: number): Promise<IncrementalStep & { id: string }> => {
    await startFrom(warmTree);
    const m = await measureOperation(dev, async () => (await api<{ operation: Operation }>(dev, 'POST', `/v1/sandboxes/${sandboxId}/snapshots`, { name: `inc-${Date.now()}` })).operation);
    const id = String(m.op.result?.snapshot_id ?? '');
    latest(id);
    const snap = await api<{ stored_bytes?: number }>(dev, 'GET', `/v1/snapshots/${id}`);
    log(`incremental: ${what}: ${fmt(m.seconds, 2)} s, stored ${fmt(mib(snap.stored_bytes ?? NaN), 2)} MiB`);
    return { id, what, seconds: m.seconds, storedBytes: snap.stored_bytes ?? NaN, changedBytes };
  };
  const steps: IncrementalStep[] = [];
  steps.push(await snapshotNow('nothing changed', 0));
  let round = 0;
  const touched = touchSmallFiles(small, 0.01, round++);
  steps.push(await snapshotNow(`1% of the small files rewritten (${touched.files} files)`, touched.bytes));
  overwriteMiddle(large.file);
  steps.push(await snapshotNow(`1 MiB overwritten in a ${fmt(mib(large.size), 0)} MiB file`, MiB));
  const list = async () => (await api<{ snapshots: { id: string; state: string; stored_bytes?: number }[] }>(dev, 'GET', `/v1/sandboxes/${sandboxId}/snapshots`)).snapshots.filter((x) => x.state === 'ready');
  while ((await list()).length < SERIES) {
    const t = touchSmallFiles(small, 0.01, round++);
    await snapshotNow(`series ${round}`, t.bytes);
  }
  const ready = await list();
  return { steps, snapshots: ready.length, storedTotal: ready.reduce((sum, x) => sum + (x.stored_bytes ?? 0), 0) };
}

// ---------------------------------------------------------------- report

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(rows[0]!), sep, ...rows.slice(1).map(line)].join('\n');
}

function toolVersion(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return (r.stdout || r.stderr || '?').split('\n')[0]!.replace(/^\*+\s*|\s*\*+$/g, '').trim();
}

const best = <T extends { seconds: number }>(xs: readonly T[]): T => xs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
const samples = (xs: { seconds: number }[]) => xs.map((x) => fmt(x.seconds, 2)).join(' / ');

interface Summary {
  r: SizeResult;
  baseSnap: Timed;
  baseRestore: Timed;
  baseDurable: Timed;
  snap: Measured;
  restore: Measured;
  snapRatio: number;
  restoreRatio: number;
  inPlaceRatio: number;
  peakMb: number;
  growthMb: number;
  /** What the series of snapshots stored together, over what the first one stored. */
  seriesRatio: number;
}

function summarize(r: SizeResult): Summary {
  const pick = <K extends keyof Round>(k: K) => r.rounds.map((x) => x[k]);
  const baseSnap = best(pick('baseSnap'));
  const baseRestore = best(pick('baseRestore'));
  // Only the first round's snapshot writes into an empty chunk store; later ones find the chunks stored.
  const snap = pick('snap')[0]!;
  const restore = best(pick('restore'));
  const ops = [...pick('snap'), ...pick('restore'), r.inPlace];
  return {
    r,
    baseSnap,
    baseRestore,
    baseDurable: best(pick('baseDurable')),
    snap,
    restore,
    snapRatio: baseSnap.seconds / snap.seconds,
    restoreRatio: baseRestore.seconds / restore.seconds,
    inPlaceRatio: baseRestore.seconds / r.inPlace.seconds,
    peakMb: Math.max(...ops.map((m) => m.workerPeakMb)),
    growthMb: Math.max(...ops.map((m) => m.workerPeakMb - m.rssBeforeMb)),
    seriesRatio: r.incremental.storedTotal / r.cagedArchiveBytes,
  };
}

function report(results: SizeResult[], args: Args): string {
  const out: string[] = [];
  const sums = results.map(summarize);
  out.push('');
  out.push(`caged snapshot bench: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${fmt(os.totalmem() / GiB)} GiB RAM, node ${process.version}, ${toolVersion('tar', ['--version'])}, ${toolVersion('zstd', ['--version'])}`);
  out.push(`  ${args.rounds} round(s) per size, alternating the order of caged and baseline; each cell is the best round (all rounds in brackets)`);
  out.push(`  load average (1/5/15 min) at the start: ${loadAtStart}; at the end: ${loadAverage()} (other work on the machine skews the numbers)`);
  out.push(
    canDropCaches
      ? '  every timed step started from a dropped page cache with only its input read back in'
      : '  the page cache could not be dropped (not root): steps started with whatever earlier steps left cached',
  );
  out.push(
    args.mode === 'split'
      ? `  processes: Temporal dev server, \`caged api\`, \`caged worker\` (measured); catalog: PostgreSQL at ${new URL(args.databaseUrl).host} (a fresh database per size); fs blob store`
      : '  processes: `caged dev` (measured: API, worker, Temporal SDK and the PGlite catalog in one process); fs blob store',
  );
  for (const r of results) {
    out.push(
      `  ${r.gib} GiB: ${r.treeFiles} files, ${fmt(mib(r.treeBytes))} MiB (${r.data.smallFiles} small = ${fmt(mib(r.data.smallBytes))} MiB, ` +
        `${r.data.largeFiles} large = ${fmt(mib(r.data.largeBytes))} MiB); archive ${fmt(mib(r.archiveBytes))} MiB baseline / ` +
        `${fmt(mib(r.cagedArchiveBytes))} MiB stored by caged's first snapshot (${fmt(r.treeBytes / r.cagedArchiveBytes, 2)}x)`,
    );
  }
  out.push('');
  const rows: string[][] = [['size', 'operation', 'baseline s', 'baseline MiB/s', 'caged s', 'caged MiB/s', 'caged/baseline', 'target', 'rounds: baseline s | caged s']];
  for (const s of sums) {
    const tp = (sec: number) => fmt(mib(s.r.treeBytes) / sec);
    const pick = <K extends keyof Round>(k: K) => s.r.rounds.map((x) => x[k]);
    rows.push([`${s.r.gib} GiB`, 'first snapshot', fmt(s.baseSnap.seconds, 2), tp(s.baseSnap.seconds), fmt(s.snap.seconds, 2), tp(s.snap.seconds), `${ratio(s.snapRatio)}x`, s.snapRatio >= TARGET_RATIO ? 'PASS' : 'FAIL', `${samples(pick('baseSnap'))} | ${samples(pick('snap'))}`]);
    rows.push([`${s.r.gib} GiB`, 'restore', fmt(s.baseRestore.seconds, 2), tp(s.baseRestore.seconds), fmt(s.restore.seconds, 2), tp(s.restore.seconds), `${ratio(s.restoreRatio)}x`, s.restoreRatio >= TARGET_RATIO ? 'PASS' : 'FAIL', `${samples(pick('baseRestore'))} | ${samples(pick('restore'))}`]);
    rows.push([`${s.r.gib} GiB`, 'restore in place', fmt(s.baseRestore.seconds, 2), tp(s.baseRestore.seconds), fmt(s.r.inPlace.seconds, 2), tp(s.r.inPlace.seconds), `${ratio(s.inPlaceRatio)}x`, s.inPlaceRatio >= TARGET_RATIO ? 'PASS' : 'FAIL', `(one run, last) | ${fmt(s.r.inPlace.seconds, 2)}`]);
  }
  out.push(table(rows));
  out.push('  baseline snapshot: tar -cf - DIR | zstd -1 -T0 > /dev/null; baseline restore: zstd -d -c ARCHIVE | tar -xf - -C EMPTYDIR');
  out.push('  caged s: from the POST to the operation\'s finished_at (polls every 100 ms). restore: into a new sandbox, like the');
  out.push('  baseline into an empty directory; restore in place: over the original sandbox, which also removes its old root.');
  for (const s of sums) {
    out.push(
      `  ${s.r.gib} GiB, for reference: the baseline writing its archive to a file + sync: ${fmt(s.baseDurable.seconds, 2)} s ` +
        `(${fmt(mib(s.r.treeBytes) / s.baseDurable.seconds)} MiB/s; caged snapshot is ${fmt(s.baseDurable.seconds / s.snap.seconds, 2)}x of that)`,
    );
  }
  out.push('');
  const inc: string[][] = [['size', 'incremental snapshot after', 'caged s', 'stored MiB', 'changed MiB', 'first snapshot s']];
  for (const s of sums) {
    for (const st of s.r.incremental.steps) inc.push([`${s.r.gib} GiB`, st.what, fmt(st.seconds, 2), fmt(mib(st.storedBytes), 2), fmt(mib(st.changedBytes), 2), fmt(s.snap.seconds, 2)]);
  }
  out.push(table(inc));
  for (const s of sums) {
    const full = s.r.incremental.snapshots * s.r.archiveBytes;
    out.push(
      `  ${s.r.gib} GiB: ${s.r.incremental.snapshots} snapshots of the sandbox store ${fmt(mib(s.r.incremental.storedTotal))} MiB together ` +
        `(as full tar.zst archives: ${fmt(mib(full))} MiB, ${fmt(full / s.r.incremental.storedTotal, 1)}x more), ` +
        `${fmt(s.seriesRatio, 2)}x what the first snapshot stored (target <= 1.5x)`,
    );
  }
  out.push('');
  const mem: string[][] = [['size', 'operation', 'worker RSS before MB', 'worker peak RSS MB', 'growth MB', 'tar+zstd peak RSS MB', 'worker CPU s', 'tar+zstd CPU s', 'baseline CPU s']];
  for (const s of sums) {
    for (const [name, ms, base] of [
      ['snapshot', s.r.rounds.map((x) => x.snap), s.baseSnap],
      ['restore', s.r.rounds.map((x) => x.restore), s.baseRestore],
      ['restore in place', [s.r.inPlace], s.baseRestore],
    ] as const) {
      const m = ms.reduce((a, b) => (b.workerPeakMb > a.workerPeakMb ? b : a));
      const b = best(ms);
      const byName = Object.entries(m.childByName)
        .map(([k, v]) => `${k} ${fmt(v, 0)}`)
        .join(', ');
      mem.push([`${s.r.gib} GiB`, name, fmt(m.rssBeforeMb), fmt(m.workerPeakMb), fmt(m.workerPeakMb - m.rssBeforeMb), `${fmt(m.childPeakMb)} (${byName || 'none seen'})`, fmt(b.nodeCpu, 2), fmt(b.childCpu, 2), fmt(base.cpu, 2)]);
    }
  }
  out.push(table(mem));
  out.push(`  worker RSS: VmRSS/VmHWM of the ${args.mode === 'split' ? '`caged worker`' : '`caged dev`'} process. VmHWM is reset just before each operation,`);
  out.push('  so "growth" is what the operation added. Highest round shown.');
  out.push(`  Idle after start-up: ${results.map((r) => `${fmt(r.idleRssMb)} MB`).join(' / ')} (start-up peak ${results.map((r) => `${fmt(r.startupPeakMb)} MB`).join(' / ')}).`);
  out.push('  CPU s (best round): user+sys; worker = the measured process (all threads); tar+zstd = its reaped children; baseline = the pipeline.');
  for (const s of sums) {
    const fmtSteps = (m: Measured) => m.steps.map((x) => `${x.step}@${fmt(x.at, 2)}`).join(' ');
    out.push(`  ${s.r.gib} GiB steps as first polled (s): snapshot ${fmtSteps(s.snap)}; restore ${fmtSteps(s.restore)}; in place ${fmtSteps(s.r.inPlace)}`);
    out.push(`  ${s.r.gib} GiB busiest worker threads (CPU s): snapshot ${s.snap.threads}; restore ${s.restore.threads}; in place ${s.r.inPlace.threads}`);
  }
  out.push('');
  const verdicts: [string, boolean][] = [];
  for (const s of sums) {
    verdicts.push([`${s.r.gib} GiB snapshot throughput >= ${TARGET_RATIO}x baseline (${ratio(s.snapRatio)}x)`, s.snapRatio >= TARGET_RATIO]);
    verdicts.push([`${s.r.gib} GiB restore throughput >= ${TARGET_RATIO}x baseline (${ratio(s.restoreRatio)}x)`, s.restoreRatio >= TARGET_RATIO]);
    verdicts.push([`${s.r.gib} GiB restore-in-place throughput >= ${TARGET_RATIO}x baseline (${ratio(s.inPlaceRatio)}x)`, s.inPlaceRatio >= TARGET_RATIO]);
    verdicts.push([`${s.r.gib} GiB ${s.r.incremental.snapshots} snapshots store <= 1.5x what the first stored (${fmt(s.seriesRatio, 2)}x)`, s.seriesRatio <= 1.5]);
    verdicts.push([`${s.r.gib} GiB worker peak RSS < ${TARGET_RSS_MB} MB (${fmt(s.peakMb)} MB; the operations added at most ${fmt(s.growthMb)} MB)`, s.peakMb < TARGET_RSS_MB]);
  }
  if (sums.length > 1) {
    const lo = sums.reduce((a, b) => (b.r.gib < a.r.gib ? b : a));
    const hi = sums.reduce((a, b) => (b.r.gib > a.r.gib ? b : a));
    const d = hi.growthMb - lo.growthMb;
    verdicts.push([`worker memory does not grow with size: growth at ${hi.r.gib} GiB - growth at ${lo.r.gib} GiB = ${fmt(d)} MB (< ${GROWTH_TOLERANCE_MB} MB)`, d < GROWTH_TOLERANCE_MB]);
  }
  for (const [what, ok] of verdicts) out.push(`${ok ? 'PASS' : 'FAIL'}  ${what}`);
  out.push('');
  return out.join('\n');
}

// ---------------------------------------------------------------- main

function checkDisk(sizes: number[], rounds: number): void {
  fs.mkdirSync(BENCH_DIR, { recursive: true });
  const st = fs.statfsSync(BENCH_DIR);
  const free = st.bavail * st.bsize;
  // Nothing is deleted before the end (see runSize). Per size: the tree, the in-place restore's
  // staging copy, one caged and one baseline restore per round, two archives (each < the tree);
  // plus 2 GiB of room.
  const need = sizes.reduce((sum, gib) => sum + gib * (4 + 2 * rounds), 0) * GiB + 2 * GiB;
  if (free < need) {
    throw new Error(
      `not enough disk space in ${BENCH_DIR}: ${fmt(free / GiB)} GiB free, ${fmt(need / GiB)} GiB needed for ${sizes.join(' + ')} GiB ` +
        `with ${rounds} round(s); use BENCH_SIZES=1, BENCH_ROUNDS=1 or free some space`,
    );
  }
  log(`disk: ${fmt(free / GiB)} GiB free, this run needs up to ${fmt(need / GiB)} GiB`);
}

function checkTools(): void {
  for (const [cmd, arg] of [
    ['tar', '--version'],
    ['zstd', '--version'],
    ['bash', '--version'],
  ]) {
    if (spawnSync(cmd!, [arg!]).status !== 0) throw new Error(`${cmd} is required`);
  }
}

const loadAverage = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
const loadAtStart = loadAverage();

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  checkTools();
  // Leftovers of an interrupted --keep run; removed first so they count as free space.
  cleanBenchDir();
  checkDisk(args.sizes, args.rounds);
  let current: Stack | undefined;
  let interrupted = false;
  const onSignal = async () => {
    if (interrupted) return;
    interrupted = true;
    log('interrupted; stopping the caged processes and cleaning up');
    if (current) await current.stop().catch(() => {});
    if (!args.keep) cleanBenchDir();
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const results: SizeResult[] = [];
  try {
    for (const gib of args.sizes) {
      results.push(
        await runSize(gib, args, (d) => {
          current = d;
        }),
      );
    }
    process.stdout.write(report(results, args) + '\n');
  } finally {
    if (!args.keep) {
      log('removing .bench/');
      cleanBenchDir();
    }
  }
}

/** Removes what earlier or this run left in .bench/ (and .bench/ itself when it ends up empty). */
function cleanBenchDir(): void {
  if (!fs.existsSync(BENCH_DIR)) return;
  for (const name of fs.readdirSync(BENCH_DIR)) {
    if (name.startsWith('size-')) fs.rmSync(path.join(BENCH_DIR, name), { recursive: true, force: true });
  }
  try {
    fs.rmdirSync(BENCH_DIR);
  } catch {
    // something else is in it
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
