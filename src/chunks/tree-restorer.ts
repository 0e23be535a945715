import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import type { Readable } from 'node:stream';
import type { CatalogDb } from '../catalog/db.js';
import { chunkLocations, type ChunkLocation } from '../catalog/chunk-store.js';
import type { CallOptions } from '../storage/blob-store.js';
import { CagedError } from '../shared/errors.js';
import { readManifest, type ManifestEntry } from './manifest.js';
import type { PackFiles } from './pack-files.js';
import { absolutePath } from './tree-walk.js';
import type { ChunkPool } from './worker-pool.js';
import { TaskLimiter } from './task-limiter.js';
import { utimesSeconds } from './file-times.mjs';

/** Files (and their bytes) a worker writes in one task: big enough to amortise a catalog lookup. */
const TASK_FILES = 256;
const TASK_BYTES = 32 * 1024 * 1024;

export interface RestoreTreeOptions {
  db: CatalogDb;
  packs: PackFiles;
  pool: ChunkPool;
  accountId: string;
  chunkKey: Buffer;
  /** The manifest's compressed bytes (the caller hashes them on the way). */
  manifest: Readable;
  /** An empty directory that becomes the tree's root. */
  dest: string;
  signal: AbortSignal;
  storeOptions?: CallOptions;
  /** Told the bytes of each batch written; the restore waits for it (tests hold or fail a restore here). */
  onBytes?: (n: number) => void | Promise<void>;
}

export interface RestoreTreeResult {
  entries: number;
  files: number;
  bytes: number;
}

type FileEntry = Extract<ManifestEntry, { type: 'file' }>;
/** What a chunk worker writes (its `restore` message): each file's runs of stored chunks and holes. */
type StoredRun = ChunkLocation & { pack: string; id: Buffer; length: number };
type RestoreRun = { hole: number } | StoredRun;
type RestoreFile = { path: Buffer; size: number; runs: RestoreRun[]; mode: number; uid: number; gid: number; mtimeNs: string };
type Attrs = { path: Buffer; mode: number; uid: number; gid: number; mtimeNs: bigint };

/**
 * Rebuilds a chunked snapshot's tree in `dest`, streaming its manifest: directories as they come,
 * files by the chunk workers in batches (each chunk checked against its id before it is written),
 * then hardlinks, then the directories' own modes, owners and times (deepest first, so creating
 * what they hold does not move their times again). Owners are restored when this process may set
 * them (root), as tar does.
 */
export async function restoreTree(o: RestoreTreeOptions): Promise<RestoreTreeResult> {
  const chown = process.getuid?.() === 0;
  const totals = { entries: 0, files: 0, bytes: 0 };
  const dirs: Attrs[] = [];
  const hardlinks: { path: Buffer; target: Buffer }[] = [];
  let failure: unknown;
  // Two batches per worker: while one is written, the next one's chunk lookup (a catalog round trip)
  // and pack opening run, so a worker finds its next batch waiting instead of idling through them.
  const tasks = new TaskLimiter(o.pool.size * 2, (err) => (failure ??= err));
  let batch: FileEntry[] = [];
  let batchBytes = 0;

  const dispatch = async () => {
    if (!batch.length) return;
    const files = batch;
    batch = [];
    batchBytes = 0;
    await tasks.run(
      async () => {
        const bytes = await writeFiles(o, files, chown);
        totals.bytes += bytes;
        await o.onBytes?.(bytes);
      },
      () => {
        if (failure) throw failure;
      },
    );
  };

  let root: Attrs | undefined;
  const parents = new ParentCheck();
  try {
    for await (const e of readManifest(o.manifest, (h) => (root = { path: Buffer.alloc(0), ...h.root }))) {
      o.signal.throwIfAborted();
      if (failure) throw failure;
      totals.entries++;
      parents.check(e);
      const abs = absolutePath(o.dest, e.path);
      switch (e.type) {
        case 'dir':
          fs.mkdirSync(abs, { mode: 0o700 });
          dirs.push(e);
          break;
        case 'file':
          totals.files++;
          batch.push(e);
          batchBytes += e.size;
          if (batch.length >= TASK_FILES || batchBytes >= TASK_BYTES) await dispatch();
          break;
        case 'symlink':
          fs.symlinkSync(e.target, abs);
          if (chown) fs.lchownSync(abs, e.uid, e.gid);
          fs.lutimesSync(abs, utimesSeconds(e.mtimeNs), utimesSeconds(e.mtimeNs));
          break;
        case 'hardlink':
          hardlinks.push({ path: abs, target: e.target });
          break;
        case 'fifo':
        case 'char':
        case 'block':
          makeNode(abs, e);
          applyAttrs(abs, e, chown);
          break;
      }
    }
    await dispatch();
    await tasks.drain();
    if (failure) throw failure;
    for (const l of hardlinks) fs.linkSync(absolutePath(o.dest, l.target), l.path);
    for (let i = dirs.length - 1; i >= 0; i--) applyAttrs(absolutePath(o.dest, dirs[i]!.path), dirs[i]!, chown);
    if (root) applyAttrs(o.dest, root, chown);
    return totals;
  } catch (err) {
    failure ??= err;
    await tasks.drain();
    throw failure;
  }
}

/**
 * Has one worker write a batch of files. A chunk that does not match its id may be a damaged
 * local copy of a remote store's pack: those copies are dropped and the batch is written once more
 * from the store (a local store's packs are the store, so the same failure comes back).
 */
async function writeFiles(o: RestoreTreeOptions, files: FileEntry[], chown: boolean): Promise<number> {
  const used = new Set<string>();
  try {
    return await writeFilesOnce(o, files, chown, used);
  } catch (err) {
    if (!(err instanceof CagedError && err.code === 'checksum_mismatch') || used.size === 0) throw err;
    for (const key of used) await o.packs.forget(key);
    for (const f of files) fs.rmSync(absolutePath(o.dest, f.path), { force: true });
    return writeFilesOnce(o, files, chown, new Set());
  }
}

/** The packs the batch reads stay pinned until it is done. */
async function writeFilesOnce(o: RestoreTreeOptions, files: FileEntry[], chown: boolean, used: Set<string>): Promise<number> {
  const ids = [...new Set(files.flatMap((f) => f.chunks.flatMap((c) => ('id' in c ? [c.id.toString('hex')] : []))))];
  const where = await chunkLocations(o.db, o.accountId, ids);
  const opened = new Map<string, { file: string; release(): void }>();
  const ch = o.pool.open();
  try {
    const packFile = async (key: string) => {
      let f = opened.get(key);
      if (!f) {
        f = await o.packs.open(key, { ...o.storeOptions, signal: o.signal });
        opened.set(key, f);
        used.add(key);
      }
      return f.file;
    };
    const tasks: { file: RestoreFile; first?: StoredRun }[] = [];
    for (const f of files) {
      const runs: RestoreRun[] = [];
      for (const c of f.chunks) {
        if ('hole' in c) {
          runs.push({ hole: c.hole });
          continue;
        }
        const at = where.get(c.id.toString('hex'));
        if (!at) throw new CagedError('checksum_mismatch', `chunk ${c.id.toString('hex')} of ${f.path.toString()} is not in the chunk store`);
        runs.push({ pack: await packFile(at.packKey), ...at, id: c.id, length: c.length });
      }
      const file = { path: absolutePath(o.dest, f.path), size: f.size, runs, mode: f.mode, uid: f.uid, gid: f.gid, mtimeNs: String(f.mtimeNs) };
      tasks.push({ file, first: runs.find((r): r is StoredRun => 'pack' in r) });
    }
    // In the order of their data, not of the tree: small files changed by later snapshots sit in other
    // packs' shared frames, and the worker keeps one frame decompressed, so each frame is read once per batch.
    tasks.sort(({ first: x }, { first: y }) => {
      if (!x || !y) return x ? 1 : y ? -1 : 0;
      return x.pack < y.pack ? -1 : x.pack > y.pack ? 1 : x.frameOffset - y.frameOffset;
    });
    ch.send({ op: 'restore', key: o.chunkKey, files: tasks.map((t) => t.file), chown });
    const done = await ch.next();
    return done.bytes as number;
  } finally {
    ch.close();
    for (const f of opened.values()) f.release();
  }
}

/**
 * A manifest is read in tree order, so every entry's parent is the directory most recently entered
 * on the path to it. Holding that stack refuses a manifest that would write through a symlink or
 * outside the root, at the cost of its depth.
 */
class ParentCheck {
  private readonly stack: Buffer[] = [];

  check(e: ManifestEntry): void {
    const p = e.path;
    const name = p.subarray(p.lastIndexOf(0x2f) + 1);
    if (!p.length || p[0] === 0x2f || !name.length || name.equals(DOT) || name.equals(DOTDOT)) {
      throw new CagedError('checksum_mismatch', `the manifest has an invalid path ${JSON.stringify(p.toString())}`);
    }
    const parent = p.subarray(0, Math.max(0, p.lastIndexOf(0x2f)));
    while (this.stack.length && !this.stack[this.stack.length - 1]!.equals(parent)) this.stack.pop();
    if (parent.length && !this.stack.length) {
      throw new CagedError('checksum_mismatch', `the manifest lists ${JSON.stringify(p.toString())} outside any directory it holds`);
    }
    if (e.type === 'dir') this.stack.push(p);
  }
}

const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

function applyAttrs(abs: Buffer | string, a: Attrs, chown: boolean): void {
  if (chown) fs.chownSync(abs, a.uid, a.gid);
  fs.chmodSync(abs, a.mode);
  fs.utimesSync(abs, utimesSeconds(a.mtimeNs), utimesSeconds(a.mtimeNs));
}

/** Node has no mknod(2): FIFOs and devices are rare enough in a sandbox to cost a process each. */
function makeNode(abs: Buffer, e: Extract<ManifestEntry, { type: 'fifo' | 'char' | 'block' }>): void {
  const target = abs.toString();
  if (!Buffer.from(target).equals(abs)) throw new CagedError('invalid_state', `cannot create the special file ${abs.toString()} (its name is not valid UTF-8)`);
  const args = e.type === 'fifo' ? ['mkfifo', '-m', '600', target] : ['mknod', '-m', '600', target, e.type === 'char' ? 'c' : 'b', String(major(e.rdev)), String(minor(e.rdev))];
  const r = spawnSync(args[0]!, args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new CagedError('invalid_state', `cannot create ${abs.toString()}: ${r.stderr?.toString().trim() || r.error?.message}`);
}

// Linux's dev_t encoding (glibc's gnu_dev_major/minor).
const major = (d: number) => ((d >>> 8) & 0xfff) | (Math.floor(d / 2 ** 32) & ~0xfff);
const minor = (d: number) => (d & 0xff) | ((d >>> 12) & ~0xff);
