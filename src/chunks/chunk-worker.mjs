// A worker thread of the chunk pool (worker-pool.ts): it reads files, cuts and hashes their chunks,
// compresses the new ones into zstd frames and writes those into a pack; and for restores, reads
// frames, checks every chunk's id and writes the files. The main thread keeps the order, the
// catalog and the store; this thread does the CPU work, so a snapshot or restore uses every core.
// Its memory is bounded: two arenas of ARENA_BYTES for scanned data, one frame buffer.
//
// Plain JS on purpose: worker threads do not get the TypeScript loader of the main thread (tsx is
// registered there through its API, not through execArgv).
//
// Messages (main -> worker, worker -> main):
//   scan {task, key, files: [{path, size}]}          -> scanned {task, part: 0, chunks, done: true}
//   scanLarge {task, key, file: {path, size, sparse}} -> scanned {task, part, chunks, done} per window
//   store {task, keep: Uint8Array, fd, offset}        -> stored {task, frames, end}; a large file's
//                                                        next window follows as another `scanned`
//   drop {task}                                       -> (frees what the task holds; no answer)
//   restore {task, key, files, chown}                 -> restored {task, bytes}
//   any failure                                       -> failed {task, error: {code, message}}
import fs from 'node:fs';
import { parentPort } from 'node:worker_threads';
import {
  FRAME_BYTES,
  MAX_CHUNK_BYTES,
  SHARED_FRAME_BELOW,
  chunkId,
  compressFrame,
  createChunkReader,
  createCutter,
  gearTable,
} from './codec.mjs';
import { utimesSeconds } from './file-times.mjs';

const ARENA_BYTES = 2 * MAX_CHUNK_BYTES;
const free = [];
const tasks = new Map();
const cutters = new Map();
const frame = Buffer.allocUnsafeSlow(FRAME_BYTES);

function arena() {
  return free.pop() ?? Buffer.allocUnsafeSlow(ARENA_BYTES);
}

function release(t) {
  if (t.fd !== undefined) fs.closeSync(t.fd);
  t.fd = undefined;
  // At most two arenas are kept for reuse; the main thread never has more than two scans out per worker.
  if (t.buf && free.length < 2) free.push(t.buf);
  t.buf = undefined;
  tasks.delete(t.task);
}

function cutterFor(key) {
  const k = Buffer.from(key).toString('hex');
  let c = cutters.get(k);
  if (!c) {
    if (cutters.size > 16) cutters.clear();
    c = createCutter(gearTable(Buffer.from(key)));
    cutters.set(k, c);
  }
  return c;
}

function readFully(fd, buf, offset, length, position) {
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, offset + got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

const isZero = (b) => b.every((x) => x === 0);

function scanSmall(m) {
  const key = Buffer.from(m.key);
  const t = { task: m.task, buf: arena(), chunks: [] };
  tasks.set(m.task, t);
  let at = 0;
  const out = [];
  for (let i = 0; i < m.files.length; i++) {
    const f = m.files[i];
    if (f.size === 0) continue;
    if (at + f.size > t.buf.length) throw Object.assign(new Error(`batch larger than the arena at file ${i}`), { code: 'EINVAL' });
    const fd = fs.openSync(Buffer.from(f.path), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    let n;
    try {
      n = readFully(fd, t.buf, at, f.size, 0);
    } finally {
      fs.closeSync(fd);
    }
    if (n === 0) continue;
    const data = t.buf.subarray(at, at + n);
    t.chunks.push({ start: at, length: n });
    out.push({ file: i, id: chunkId(key, data), length: n });
    at += n;
  }
  parentPort.postMessage({ op: 'scanned', task: m.task, part: 0, chunks: out, done: true });
}

function startLarge(m) {
  const t = {
    task: m.task,
    key: Buffer.from(m.key),
    cut: cutterFor(m.key),
    buf: arena(),
    fd: fs.openSync(Buffer.from(m.file.path), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW),
    size: m.file.size,
    sparse: !!m.file.sparse,
    position: 0,
    fill: 0,
    part: 0,
    chunks: [],
    done: false,
  };
  tasks.set(m.task, t);
  scanWindow(t);
}

/** Cuts the next window of a large file: whole chunks only; the bytes after the last cut wait for the next read. */
function scanWindow(t) {
  // Keep what the previous window left after its last cut.
  const leftStart = t.chunks.length ? t.chunks[t.chunks.length - 1].start + t.chunks[t.chunks.length - 1].length : 0;
  if (leftStart > 0) {
    t.buf.copy(t.buf, 0, leftStart, t.fill);
    t.fill -= leftStart;
  }
  t.chunks = [];
  const want = Math.min(t.buf.length - t.fill, t.size - t.position);
  const n = want > 0 ? readFully(t.fd, t.buf, t.fill, want, t.position) : 0;
  t.position += n;
  t.fill += n;
  // The file ends at its recorded size (or earlier, if it shrank): what is read past that is not taken.
  const eof = n < want || t.position >= t.size;
  const out = [];
  for (let at = 0; at < t.fill; ) {
    const end = t.cut(t.buf, at, t.fill, eof);
    if (end < 0) break;
    const data = t.buf.subarray(at, end);
    const chunk = { start: at, length: end - at };
    t.chunks.push(chunk);
    if (t.sparse && isZero(data)) out.push({ zero: true, length: chunk.length });
    else out.push({ id: chunkId(t.key, data), length: chunk.length });
    at = end;
  }
  t.done = eof && (t.chunks.length ? t.chunks[t.chunks.length - 1].start + t.chunks[t.chunks.length - 1].length : 0) === t.fill;
  parentPort.postMessage({ op: 'scanned', task: t.task, part: t.part++, chunks: out, done: t.done });
}

/** Compresses the kept chunks of the task's last scan into frames and writes them at `offset` of the pack `fd`. */
function store(m) {
  const t = tasks.get(m.task);
  if (!t) throw new Error(`no scanned task ${m.task}`);
  const frames = [];
  let offset = m.offset;
  let fill = 0;
  let members = [];
  const write = (raw, chunkList) => {
    const data = compressFrame(raw);
    fs.writeSync(m.fd, data, 0, data.length, offset);
    frames.push({ offset, length: data.length, rawLength: raw.length, chunks: chunkList });
    offset += data.length;
  };
  const flush = () => {
    if (fill === 0) return;
    write(frame.subarray(0, fill), members);
    fill = 0;
    members = [];
  };
  for (let i = 0; i < t.chunks.length; i++) {
    if (!m.keep[i]) continue;
    const c = t.chunks[i];
    const data = t.buf.subarray(c.start, c.start + c.length);
    if (c.length >= SHARED_FRAME_BELOW) {
      write(data, [[i, 0]]);
      continue;
    }
    if (fill + c.length > FRAME_BYTES) flush();
    data.copy(frame, fill);
    members.push([i, fill]);
    fill += c.length;
  }
  flush();
  parentPort.postMessage({ op: 'stored', task: t.task, frames, end: offset });
  if (t.fd !== undefined && !t.done) scanWindow(t);
  else release(t);
}

/** Writes restored files: every chunk is checked against its id before a byte of it is written. */
function restore(m) {
  const packs = new Map();
  let bytes = 0;
  const chunkOf = createChunkReader(Buffer.from(m.key), (pack, offset, length) => {
    let fd = packs.get(pack);
    if (fd === undefined) {
      fd = fs.openSync(pack, 'r');
      packs.set(pack, fd);
    }
    const stored = Buffer.allocUnsafe(length);
    return stored.subarray(0, readFully(fd, stored, 0, length, offset));
  });
  try {
    for (const f of m.files) {
      const fd = fs.openSync(Buffer.from(f.path), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, f.mode & 0o777);
      try {
        let position = 0;
        let endsInHole = false;
        for (const r of f.runs) {
          endsInHole = r.hole !== undefined;
          if (r.hole !== undefined) {
            position += r.hole;
            continue;
          }
          const data = chunkOf(r.pack, r);
          fs.writeSync(fd, data, 0, data.length, position);
          position += data.length;
          bytes += data.length;
        }
        // A file that ends in a hole gets its size only from this (nothing was written there).
        if (endsInHole || position !== f.size) fs.ftruncateSync(fd, f.size);
        // Each call costs a few microseconds on every file of a restore: only the ones that change something.
        if (m.chown && (f.uid !== OWN_UID || f.gid !== OWN_GID)) fs.fchownSync(fd, f.uid, f.gid);
        if (UMASK === undefined || (f.mode & 0o7777) !== (f.mode & 0o777 & ~UMASK)) fs.fchmodSync(fd, f.mode);
        const t = utimesSeconds(f.mtimeNs);
        fs.futimesSync(fd, t, t);
      } finally {
        fs.closeSync(fd);
      }
    }
  } finally {
    for (const fd of packs.values()) fs.closeSync(fd);
  }
  parentPort.postMessage({ op: 'restored', task: m.task, bytes });
}

/** What a file this thread creates gets without asking: its owner, and its mode after the umask (Linux's /proc). */
const OWN_UID = process.getuid?.();
const OWN_GID = process.getgid?.();
const UMASK = (() => {
  try {
    const m = /^Umask:\s*([0-7]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? parseInt(m[1], 8) : undefined;
  } catch {
    return undefined;
  }
})();

parentPort.on('message', (m) => {
  try {
    if (m.op === 'scan') scanSmall(m);
    else if (m.op === 'scanLarge') startLarge(m);
    else if (m.op === 'store') store(m);
    else if (m.op === 'restore') restore(m);
    else if (m.op === 'drop') {
      const t = tasks.get(m.task);
      if (t) release(t);
    }
  } catch (err) {
    const t = tasks.get(m.task);
    if (t) {
      try {
        release(t);
      } catch {}
    }
    parentPort.postMessage({ op: 'failed', task: m.task, error: { code: err.code ?? 'internal', message: err.message, path: err.path ? String(err.path) : undefined } });
  }
});
