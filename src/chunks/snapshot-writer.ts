import type { BigIntStats } from 'node:fs';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { CagedError } from '../shared/errors.js';
import { createReadStream, createWriteStream, lstatSync, readlinkSync } from 'node:fs';
import type { CatalogDb } from '../catalog/db.js';
import { referenceStoredChunks } from '../catalog/chunk-store.js';
import type { BlobStore, PutOptions } from '../storage/blob-store.js';
import { SMALL_FILE_BYTES, MAX_CHUNK_BYTES } from './codec.mjs';
import { ManifestWriter, readManifest, treeOrder, type ChunkRef, type ManifestEntry, type ManifestHeader } from './manifest.js';
import { openOutput } from './object-output.js';
import type { PackFiles } from './pack-files.js';
import { PackWriter } from './pack-writer.js';
import type { PackFrame } from './pack-format.js';
import { absolutePath, walkTree, type WalkedEntry } from './tree-walk.js';
import type { ChunkPool, TaskChannel } from './worker-pool.js';
import { TaskLimiter } from './task-limiter.js';

/** What a chunk worker's scan reports for one chunk. */
type ScannedChunk = { file?: number; id?: Uint8Array; zero?: boolean; length: number };

/** The arena of a worker's scan (chunk-worker.mjs): a batch of small files fits in it. */
const BATCH_BYTES = 2 * MAX_CHUNK_BYTES;
const BATCH_FILES = 512;
/** Unchanged files' chunks referenced per statement. */
const REUSE_BATCH_IDS = 4096;
/** How far the walk may run ahead of the manifest (entries waiting for their chunks). */
const MAX_PENDING_ENTRIES = 8192;
/** A file changed within this long before the previous walk began may have changed again unseen (coarse timestamps). */
const RACY_NS = 1_000_000_000n;
const TICK_ENTRIES = 256;

export interface ParentManifest {
  snapshotId: string;
  /** A local copy of its manifest, checked against its sha256 before (see fetchParentManifest). */
  file: string;
}

export interface WriteSnapshotOptions {
  db: CatalogDb;
  store: BlobStore;
  packs: PackFiles;
  pool: ChunkPool;
  accountId: string;
  snapshotId: string;
  chunkKey: Buffer;
  /** The tree to record (quiesced by the caller). */
  tree: string;
  manifestKey: string;
  /** The snapshot this one is compared with: its unchanged files are not read again. */
  parent?: ParentManifest;
  /** Spool space for remote stores (packs, the manifest), on the sandbox's own disk. */
  spoolDir?: string;
  /**
   * Refuse devices, FIFOs and setuid/setgid files (imports): the validator refused them in the
   * archive already, and this holds whatever the extractor made, however it read the archive.
   */
  plainOnly?: boolean;
  signal: AbortSignal;
  putOptions?: () => PutOptions;
  /** Runs once every file has been read: the sandbox may continue while the rest is stored. */
  afterRead?: () => Promise<void>;
  /** Called as bytes are read or stored; an error it returns stops the snapshot (limits). */
  onProgress?: (p: { readBytes: number; logicalBytes: number; storedBytes: number }) => Error | undefined;
  /** Told the bytes of packs and of the manifest as they go to the store; the upload waits for it. */
  onUpload?: (n: number) => void | Promise<void>;
  /** Told the bytes of each part read; the snapshot waits for it (tests hold or fail a snapshot here). */
  onBytes?: (n: number) => void | Promise<void>;
}

export interface WriteSnapshotResult {
  logicalBytes: number;
  storedBytes: number;
  manifestBytes: number;
  sha256: string;
  entries: number;
  files: number;
  /** Files whose bytes were read (changed or new) and those taken from the parent unread. */
  filesRead: number;
  filesReused: number;
  bytesRead: number;
  packs: number;
}

/** A manifest entry in walk order, waiting for its chunks when it is a file being read. */
interface Slot {
  entry: ManifestEntry;
  ready: boolean;
}

/**
 * Records a tree as a chunked snapshot: walks it in tree order beside the parent's manifest; a
 * file whose size, mtime, ctime and inode match its parent entry keeps the parent's chunks unread
 * (referenced in batches, and read after all if a chunk has gone); every other file is read by the
 * chunk workers, cut and hashed there, and only chunks the account does not store yet are
 * compressed into packs. The manifest is written in the same order as the walk, so neither tree
 * nor chunk list is ever held whole in memory.
 */
export async function writeSnapshot(o: WriteSnapshotOptions): Promise<WriteSnapshotResult> {
  const walkStartedNs = BigInt(Date.now()) * 1_000_000n;
  const stats = { filesRead: 0, filesReused: 0, bytesRead: 0, logicalBytes: 0 };
  /** New chunks this snapshot put into packs not yet committed: a second copy in the same snapshot is not stored. */
  const uncommitted = new Set<string>();
  const packs = new PackWriter({
    db: o.db,
    store: o.store,
    packs: o.packs,
    accountId: o.accountId,
    snapshotId: o.snapshotId,
    spoolDir: o.spoolDir,
    putOptions: o.putOptions,
    onUpload: o.onUpload,
    onCommitted: (ids) => {
      for (const id of ids) uncommitted.delete(id);
      check();
    },
  });
  const rootStat = lstatSync(o.tree, { bigint: true });
  const header: ManifestHeader = { walkStartedNs, root: { mode: Number(rootStat.mode & 0o7777n), uid: Number(rootStat.uid), gid: Number(rootStat.gid), mtimeNs: rootStat.mtimeNs } };
  const manifestOut = await openOutput(o.store, o.manifestKey, o.spoolDir);
  const manifestStream: Writable = createWriteStream('', { fd: manifestOut.fd, autoClose: false });
  const manifest = new ManifestWriter(manifestStream, header);

  let failure: unknown;
  const fail = (err: unknown) => {
    failure ??= err;
  };
  const check = () => {
    const err = o.onProgress?.({ readBytes: stats.bytesRead, logicalBytes: stats.logicalBytes, storedBytes: packs.storedBytes });
    if (err) fail(err);
  };
  const throwIfFailed = () => {
    o.signal.throwIfAborted();
    if (failure) throw failure;
  };

  // ---- the ordered output: entries go to the manifest in walk order, files once their chunks are known
  const slots: Slot[] = [];
  let flushing = Promise.resolve();
  const flush = () => {
    flushing = flushing.then(async () => {
      while (slots.length && slots[0]!.ready) await manifest.add(slots.shift()!.entry);
    });
    flushing.catch(fail);
  };

  // ---- work in flight: at most two tasks per worker (one scanning while the other is stored)
  const tasks = new TaskLimiter(o.pool.size * 2, fail);
  const launch = (work: () => Promise<void>) => tasks.run(work, throwIfFailed);

  /** Chooses which scanned chunks to store: not zero (a hole), not stored by the account, not already in this snapshot's packs. */
  async function decide(chunks: ScannedChunk[]): Promise<{ keep: Uint8Array; ids: (string | undefined)[] }> {
    const ids = chunks.map((c) => (c.zero ? undefined : Buffer.from(c.id!).toString('hex')));
    const ask = [...new Set(ids.filter((id): id is string => !!id && !uncommitted.has(id)))];
    const stored = await referenceStoredChunks(o.db, o.accountId, o.snapshotId, ask);
    const keep = new Uint8Array(chunks.length);
    for (let i = 0; i < chunks.length; i++) {
      const id = ids[i];
      // Checked again after the lookup: another task may have taken the chunk meanwhile.
      if (!id || stored.has(id) || uncommitted.has(id)) continue;
      keep[i] = 1;
      uncommitted.add(id);
    }
    return { keep, ids };
  }

  /** One scan-and-store conversation with a worker; returns the chunks of each part in order. */
  async function scanAndStore(ch: TaskChannel, first: Record<string, unknown>, onPart: (chunks: ScannedChunk[], ids: (string | undefined)[]) => void): Promise<void> {
    ch.send(first);
    try {
      for (;;) {
        const scanned = await ch.next();
        throwIfFailed();
        const chunks = scanned.chunks as ScannedChunk[];
        for (const c of chunks) stats.bytesRead += c.length;
        await o.onBytes?.(chunks.reduce((s, c) => s + c.length, 0));
        const { keep, ids } = await decide(chunks);
        if (!keep.includes(1)) {
          // Nothing new: the worker moves on (or frees the scan) without a pack being opened for it.
          ch.send({ op: 'store', keep, fd: -1, offset: 0 });
          await ch.next();
          onPart(chunks, ids);
          check();
          if (scanned.done) break;
          continue;
        }
        await packs.withPack(ch.worker, async (pack) => {
          ch.send({ op: 'store', keep, fd: pack.fd, offset: pack.end });
          const stored = await ch.next();
          const frames = (stored.frames as { offset: number; length: number; rawLength: number; chunks: [number, number][] }[]).map(
            (f): PackFrame => ({ offset: f.offset, length: f.length, rawLength: f.rawLength, chunks: f.chunks.map(([i, off]) => [ids[i]!, off, chunks[i]!.length]) }),
          );
          pack.record(frames);
          pack.end = stored.end as number;
        });
        onPart(chunks, ids);
        check();
        if (scanned.done) break;
      }
    } finally {
      ch.close();
    }
  }

  // ---- files to read
  let batch: { slot: Slot; path: Buffer; size: number }[] = [];
  let batchBytes = 0;
  const dispatchBatch = async () => {
    if (!batch.length) return;
    const files = batch;
    batch = [];
    batchBytes = 0;
    await launch(async () => {
      const ch = o.pool.open();
      const perFile: ChunkRef[][] = files.map(() => []);
      await scanAndStore(ch, { op: 'scan', key: o.chunkKey, files: files.map((f) => ({ path: f.path, size: f.size })) }, (chunks, ids) => {
        chunks.forEach((c, i) => perFile[c.file!]!.push({ id: Buffer.from(ids[i]!, 'hex'), length: c.length }));
      });
      files.forEach((f, i) => fillFile(f.slot, perFile[i]!));
      flush();
    });
  };
  const readLarge = async (slot: Slot, abs: Buffer, size: number, sparse: boolean) => {
    await launch(async () => {
      const ch = o.pool.open();
      const refs: ChunkRef[] = [];
      await scanAndStore(ch, { op: 'scanLarge', key: o.chunkKey, file: { path: abs, size, sparse } }, (chunks, ids) => {
        chunks.forEach((c, i) => {
          if (c.zero) {
            const last = refs[refs.length - 1];
            if (last && 'hole' in last) last.hole += c.length;
            else refs.push({ hole: c.length });
          } else refs.push({ id: Buffer.from(ids[i]!, 'hex'), length: c.length });
        });
      });
      fillFile(slot, refs);
      flush();
    });
  };
  const readFile = async (slot: Slot, abs: Buffer, st: BigIntStats) => {
    stats.filesRead++;
    const size = Number(st.size);
    // A file with fewer blocks than its size has holes: its zero chunks are stored as holes.
    const sparse = Number(st.blocks) * 512 < size;
    if (size >= SMALL_FILE_BYTES || sparse) return readLarge(slot, abs, size, sparse);
    if (size === 0) {
      fillFile(slot, []);
      return;
    }
    if (batchBytes + size > BATCH_BYTES || batch.length >= BATCH_FILES) await dispatchBatch();
    batch.push({ slot, path: abs, size });
    batchBytes += size;
  };
  /** The file's size is what was read (a file that changed length while read is recorded as read). */
  const fillFile = (slot: Slot, chunks: ChunkRef[]) => {
    const e = slot.entry as Extract<ManifestEntry, { type: 'file' }>;
    e.chunks = chunks;
    e.size = chunks.reduce((s, c) => s + ('hole' in c ? c.hole : c.length), 0);
    slot.ready = true;
  };

  // ---- unchanged files: their parent's chunks, referenced in batches while the walk goes on
  type Reused = { slot: Slot; abs: Buffer; st: BigIntStats; chunks: ChunkRef[] };
  let reuse: Reused[] = [];
  let reuseIds = 0;
  /** The batch of references in flight (one at a time): PostgreSQL works while the walk stats. */
  let reusing: Promise<void> = Promise.resolve();
  /** Unchanged files a chunk of which has gone (its snapshot was deleted meanwhile): read after all. */
  const gone: Reused[] = [];
  const dispatchReuse = async () => {
    if (!reuse.length) return;
    const files = reuse;
    reuse = [];
    reuseIds = 0;
    await reusing;
    throwIfFailed();
    const ids = [...new Set(files.flatMap((f) => f.chunks.flatMap((c) => ('id' in c ? [c.id.toString('hex')] : []))))];
    reusing = referenceStoredChunks(o.db, o.accountId, o.snapshotId, ids).then((found) => {
      for (const f of files) {
        if (f.chunks.every((c) => !('id' in c) || found.has(c.id.toString('hex')))) {
          stats.filesReused++;
          fillFile(f.slot, f.chunks);
        } else gone.push(f);
      }
      flush();
    }, fail);
  };
  /** Reads what a finished batch found gone; only the walk's own flow calls readFile, never a batch. */
  const readGone = async () => {
    while (gone.length) {
      const f = gone.shift()!;
      await readFile(f.slot, f.abs, f.st);
    }
  };

  // ---- the walk, beside the parent's manifest
  let parentIter: AsyncGenerator<ManifestEntry> | undefined;
  let parentHeader: ManifestHeader | undefined;
  let parentCur: ManifestEntry | undefined;
  if (o.parent) {
    parentIter = readManifest(createReadStream(o.parent.file), (h) => (parentHeader = h));
    parentCur = (await parentIter.next()).value ?? undefined;
  }
  const parentEntry = async (p: Buffer): Promise<ManifestEntry | undefined> => {
    while (parentCur && treeOrder(parentCur.path, p) < 0) parentCur = (await parentIter!.next()).value ?? undefined;
    return parentCur && treeOrder(parentCur.path, p) === 0 ? parentCur : undefined;
  };

  const hardlinks = new Map<string, Buffer>();
  try {
    let n = 0;
    for (const w of walkTree(o.tree)) {
      if (++n % TICK_ENTRIES === 0) {
        await yieldToLoop();
        while (slots.length > MAX_PENDING_ENTRIES) {
          // Reuse first: a file whose parent's chunks are gone joins the batch of files to read.
          await dispatchReuse();
          await reusing;
          await readGone();
          await dispatchBatch();
          // Wait for the work the oldest entry waits for. Racing an already settled `flushing` as
          // well spun here without ever yielding, so no worker's answer arrived (and every race
          // added a reaction to the running tasks until the heap ran out: 1% of 20,000 files changed).
          if (tasks.size) await tasks.next();
          else await flushing;
          await yieldToLoop();
          throwIfFailed();
          if (!tasks.size && slots.length > MAX_PENDING_ENTRIES && !slots[0]!.ready) throw new Error(`snapshot writer stalled at ${slots[0]!.entry.path.toString()}`);
        }
      }
      throwIfFailed();
      const entry = entryOf(o.tree, w, hardlinks);
      if (!entry) continue;
      if (o.plainOnly) assertPlain(entry);
      const slot: Slot = { entry, ready: entry.type !== 'file' };
      slots.push(slot);
      if (entry.type !== 'file') continue;
      stats.logicalBytes += entry.size;
      const abs = absolutePath(o.tree, w.path);
      const before = parentIter ? await parentEntry(w.path) : undefined;
      if (before && parentHeader && unchanged(entry, before, parentHeader.walkStartedNs)) {
        reuse.push({ slot, abs, st: w.stat, chunks: (before as Extract<ManifestEntry, { type: 'file' }>).chunks });
        reuseIds += (before as Extract<ManifestEntry, { type: 'file' }>).chunks.length;
        if (reuseIds >= REUSE_BATCH_IDS) await dispatchReuse();
      } else {
        await readFile(slot, abs, w.stat);
      }
      if (gone.length) await readGone();
    }
    await dispatchReuse();
    await reusing;
    await readGone();
    await dispatchBatch();
    await tasks.drain();
    throwIfFailed();
    await o.afterRead?.();
    flush();
    await flushing;
    throwIfFailed();
    await packs.finish();
    const done = await manifest.finish();
    throwIfFailed();
    await manifestOut.publish({ putOptions: o.putOptions?.(), onUpload: o.onUpload });
    return {
      logicalBytes: done.totals.bytes,
      storedBytes: packs.storedBytes,
      manifestBytes: done.bytes,
      sha256: done.sha256,
      entries: done.totals.entries,
      files: done.totals.files,
      filesRead: stats.filesRead,
      filesReused: stats.filesReused,
      bytesRead: stats.bytesRead,
      packs: packs.packsStored,
    };
  } catch (err) {
    fail(err);
    await reusing;
    await tasks.drain();
    manifest.destroy();
    await manifestOut.discard().catch(() => {});
    await packs.abort();
    throw failure;
  } finally {
    await parentIter?.return(undefined).catch(() => {});
  }
}

function assertPlain(e: ManifestEntry): void {
  const name = JSON.stringify(e.path.toString('utf8').slice(0, 200));
  if (e.type === 'fifo' || e.type === 'char' || e.type === 'block') {
    throw new CagedError('invalid_archive', `the extracted archive holds a ${e.type === 'fifo' ? 'FIFO' : 'device node'} at ${name}, which import does not allow`);
  }
  if (e.mode & 0o6000) throw new CagedError('invalid_archive', `the extracted archive holds a setuid/setgid entry at ${name}, which import does not allow`);
}

/** A parent's entry still describes the file: same size, mtime, ctime and inode, and not changed right before the parent's walk. */
function unchanged(e: Extract<ManifestEntry, { type: 'file' }>, p: ManifestEntry, parentWalkNs: bigint): boolean {
  return (
    p.type === 'file' &&
    p.size === e.size &&
    p.mtimeNs === e.mtimeNs &&
    p.ctimeNs === e.ctimeNs &&
    p.ino === e.ino &&
    p.ctimeNs !== undefined &&
    p.ctimeNs < parentWalkNs - RACY_NS &&
    p.mtimeNs < parentWalkNs - RACY_NS
  );
}

/** The manifest entry of a walked path (chunks to follow); sockets are skipped, as tar does. */
function entryOf(tree: string, w: WalkedEntry, hardlinks: Map<string, Buffer>): ManifestEntry | undefined {
  const st = w.stat;
  const common = { path: w.path, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtimeNs: st.mtimeNs };
  if (st.isDirectory()) return { ...common, type: 'dir' };
  if (st.isSymbolicLink()) return { ...common, type: 'symlink', target: readlinkSync(absolutePath(tree, w.path), { encoding: 'buffer' }) };
  if (st.isFile()) {
    if (st.nlink > 1n) {
      const k = `${st.dev}:${st.ino}`;
      const first = hardlinks.get(k);
      if (first) return { ...common, type: 'hardlink', target: first };
      hardlinks.set(k, w.path);
    }
    return { ...common, type: 'file', size: Number(st.size), chunks: [], ino: st.ino, ctimeNs: st.ctimeNs };
  }
  if (st.isFIFO()) return { ...common, type: 'fifo' };
  if (st.isCharacterDevice()) return { ...common, type: 'char', rdev: Number(st.rdev) };
  if (st.isBlockDevice()) return { ...common, type: 'block', rdev: Number(st.rdev) };
  return undefined;
}

/**
 * Copies a parent snapshot's manifest to `file` and checks it against its sha256, before the
 * sandbox is stopped: a parent only saves work, so one that is missing or damaged is reported and
 * the snapshot reads every file instead (undefined). A store that fails otherwise fails the attempt.
 */
export async function fetchParentManifest(
  store: BlobStore,
  parent: { snapshotId: string; key: string; sha256: string },
  file: string,
  signal: AbortSignal,
): Promise<{ parent?: ParentManifest; problem?: string }> {
  const hash = createHash('sha256');
  try {
    const body = await store.get(parent.key, { signal });
    body.on('data', (c: Buffer) => hash.update(c));
    await pipeline(body, createWriteStream(file), { signal });
  } catch (err) {
    if (err instanceof CagedError && err.code === 'not_found') return { problem: `the manifest of ${parent.snapshotId} is missing` };
    throw err;
  }
  const actual = hash.digest('hex');
  if (actual !== parent.sha256) return { problem: `the manifest of ${parent.snapshotId} hashes to ${actual}, not ${parent.sha256}` };
  return { parent: { snapshotId: parent.snapshotId, file } };
}
