import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import zlib from 'node:zlib';
import { CagedError } from '../shared/errors.js';

/**
 * A chunked snapshot's manifest: its tree (everything the tar format of earlier snapshots kept:
 * paths, types, modes, owners, modification times, symlinks, hardlinks, empty directories, sparse
 * files, FIFOs and devices) and each file's chunk references, one JSON line per entry, the whole
 * compressed with zstd. Entries come in tree order (treeOrder), so the next snapshot can walk its
 * tree and read this one side by side, holding neither in memory. A header line opens it and a
 * trailer line closes it, so a truncated manifest is refused, not taken for a smaller tree.
 */

/** A run of a file's bytes: a chunk (its id and length), or a hole of a sparse file. */
export type ChunkRef = { id: Buffer; length: number } | { hole: number };

interface Common {
  /** Relative to the tree's root, '/'-separated raw bytes (file names need not be UTF-8). */
  path: Buffer;
  /** Permission bits, setuid/setgid/sticky included. */
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
}

export type ManifestEntry =
  | (Common & { type: 'dir' })
  | (Common & { type: 'file'; size: number; chunks: ChunkRef[]; sparse?: boolean; ino?: bigint; ctimeNs?: bigint })
  | (Common & { type: 'symlink'; target: Buffer })
  | (Common & { type: 'hardlink'; target: Buffer })
  | (Common & { type: 'fifo' })
  | (Common & { type: 'char' | 'block'; rdev: number });

export interface ManifestHeader {
  /** When the walk began: files changed later than a second before it are read again next time. */
  walkStartedNs: bigint;
  root: Omit<Common, 'path'>;
}

export interface ManifestTotals {
  entries: number;
  files: number;
  /** Bytes of the regular files: the snapshot's logical size. */
  bytes: number;
}

const SLASH = 0x2f;

/**
 * The order of a depth-first walk with each directory's names sorted by their bytes: a directory
 * comes before what it holds, and '/' sorts below every other byte (so 'a/x' < 'a-b').
 */
export function treeOrder(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x === y) continue;
    return (x === SLASH ? -1 : x) - (y === SLASH ? -1 : y);
  }
  return a.length - b.length;
}

const TYPE_CODE = { dir: 'd', file: 'f', symlink: 'l', hardlink: 'h', fifo: 'p', char: 'c', block: 'b' } as const;
const CODE_TYPE = Object.fromEntries(Object.entries(TYPE_CODE).map(([t, c]) => [c, t])) as Record<string, ManifestEntry['type']>;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Bytes as a JSON field: a string where they are UTF-8 (readable), base64 otherwise (exact). */
function bytesField(name: string, b: Buffer, out: Record<string, unknown>): void {
  try {
    out[name] = utf8.decode(b);
  } catch {
    out[`${name}b`] = b.toString('base64');
  }
}

function readBytes(o: Record<string, unknown>, name: string): Buffer {
  if (typeof o[name] === 'string') return Buffer.from(o[name] as string, 'utf8');
  if (typeof o[`${name}b`] === 'string') return Buffer.from(o[`${name}b`] as string, 'base64');
  throw new Error(`manifest entry without ${name}`);
}

export function encodeEntry(e: ManifestEntry): string {
  const o: Record<string, unknown> = { t: TYPE_CODE[e.type] };
  bytesField('p', e.path, o);
  o.m = e.mode;
  o.u = e.uid;
  o.g = e.gid;
  o.mt = e.mtimeNs.toString();
  if (e.type === 'file') {
    o.s = e.size;
    o.c = e.chunks.map((c) => ('hole' in c ? [null, c.hole] : [c.id.toString('hex'), c.length]));
    if (e.sparse) o.sp = 1;
    if (e.ino !== undefined) o.i = e.ino.toString();
    if (e.ctimeNs !== undefined) o.ct = e.ctimeNs.toString();
  } else if (e.type === 'symlink' || e.type === 'hardlink') {
    bytesField('x', e.target, o);
  } else if (e.type === 'char' || e.type === 'block') {
    o.rd = e.rdev;
  }
  return JSON.stringify(o);
}

export function decodeEntry(line: string): ManifestEntry {
  const o = JSON.parse(line) as Record<string, unknown>;
  const type = CODE_TYPE[o.t as string];
  const int = (k: string) => {
    const v = o[k];
    if (!Number.isSafeInteger(v) || (v as number) < 0) throw new Error(`manifest entry field ${k} is not a non-negative integer`);
    return v as number;
  };
  if (!type) throw new Error(`manifest entry of unknown type ${JSON.stringify(o.t)}`);
  const common = { path: readBytes(o, 'p'), mode: int('m'), uid: int('u'), gid: int('g'), mtimeNs: BigInt(o.mt as string) };
  switch (type) {
    case 'file': {
      const chunks = (o.c as [string | null, number][]).map(([id, n]): ChunkRef => {
        if (!Number.isSafeInteger(n) || n < 0) throw new Error('manifest chunk length is not a non-negative integer');
        return id === null ? { hole: n } : { id: Buffer.from(id, 'hex'), length: n };
      });
      return {
        ...common,
        type,
        size: int('s'),
        chunks,
        ...(o.sp ? { sparse: true } : {}),
        ...(o.i !== undefined ? { ino: BigInt(o.i as string) } : {}),
        ...(o.ct !== undefined ? { ctimeNs: BigInt(o.ct as string) } : {}),
      };
    }
    case 'symlink':
    case 'hardlink':
      return { ...common, type, target: readBytes(o, 'x') };
    case 'char':
    case 'block':
      return { ...common, type, rdev: int('rd') };
    default:
      return { ...common, type } as ManifestEntry;
  }
}

const MAGIC = 'caged-manifest';
const VERSION = 1;

/**
 * Writes a manifest to `out` through zstd, counting what it wrote: its sha256 and size are the
 * snapshot's checksum and manifest bytes. Lines are buffered up to 64 KiB before compression.
 */
export class ManifestWriter {
  private readonly zstd = zlib.createZstdCompress({ params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } });
  private readonly hash = createHash('sha256');
  private pending: string[] = [];
  private pendingBytes = 0;
  private previous: Buffer | undefined;
  private storedBytes = 0;
  readonly totals: ManifestTotals = { entries: 0, files: 0, bytes: 0 };
  private readonly done: Promise<void>;

  constructor(out: Writable, header: ManifestHeader) {
    this.zstd.on('data', (c: Buffer) => {
      this.hash.update(c);
      this.storedBytes += c.length;
    });
    this.zstd.pipe(out);
    this.done = new Promise<void>((resolve, reject) => {
      out.once('finish', resolve);
      out.once('error', reject);
      this.zstd.once('error', reject);
    });
    const { root } = header;
    this.line(JSON.stringify({ [MAGIC]: VERSION, walk_started_ns: header.walkStartedNs.toString(), root: { m: root.mode, u: root.uid, g: root.gid, mt: root.mtimeNs.toString() } }));
  }

  /** Entries must come in tree order; a writer that breaks it would make the next snapshot's comparison wrong. */
  async add(e: ManifestEntry): Promise<void> {
    if (this.previous && treeOrder(this.previous, e.path) >= 0) throw new Error(`manifest entries out of order at ${e.path.toString()}`);
    this.previous = e.path;
    this.totals.entries++;
    if (e.type === 'file') {
      this.totals.files++;
      this.totals.bytes += e.size;
    }
    this.line(encodeEntry(e));
    if (this.pendingBytes >= 64 * 1024) await this.flushLines();
  }

  private line(s: string): void {
    this.pending.push(s);
    this.pendingBytes += s.length + 1;
  }

  private async flushLines(): Promise<void> {
    const text = this.pending.join('\n') + '\n';
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.zstd.write(text)) await once(this.zstd, 'drain');
  }

  /** Writes the trailer and ends the stream; resolves once `out` has finished. */
  async finish(): Promise<{ sha256: string; bytes: number; totals: ManifestTotals }> {
    this.line(JSON.stringify({ end: this.totals }));
    await this.flushLines();
    this.zstd.end();
    await this.done;
    return { sha256: this.hash.digest('hex'), bytes: this.storedBytes, totals: { ...this.totals } };
  }

  destroy(err?: Error): void {
    this.zstd.destroy(err);
  }
}

/** The most a single manifest line may be (a file of 1 TiB at 1 MiB chunks is ~80 MiB): a bound, not a use. */
const MAX_LINE_BYTES = 256 * 1024 * 1024;

/**
 * Reads a manifest: first its header, then its entries in tree order. A manifest that is cut
 * short, has no trailer, or whose trailer disagrees with its entries is refused (CagedError
 * 'checksum_mismatch' is for the bytes; this is 'internal' with the reason).
 */
export async function* readManifest(compressed: Readable, onHeader?: (h: ManifestHeader) => void): AsyncGenerator<ManifestEntry> {
  const unzstd = zlib.createZstdDecompress();
  // The store's own failures (a reset, a timeout) are not damage: they pass through as they are.
  let sourceError: unknown;
  compressed.on('error', (e) => {
    sourceError = e;
    unzstd.destroy(e);
  });
  compressed.pipe(unzstd);
  let rest = '';
  let sawHeader = false;
  let trailer: ManifestTotals | undefined;
  const seen: ManifestTotals = { entries: 0, files: 0, bytes: 0 };
  const decoder = new TextDecoder('utf-8');
  try {
    for await (const chunk of unzstd) {
      rest += decoder.decode(chunk as Buffer, { stream: true });
      if (rest.length > MAX_LINE_BYTES) throw corrupt('a line longer than the bound');
      let nl: number;
      let from = 0;
      const lines: string[] = [];
      while ((nl = rest.indexOf('\n', from)) >= 0) {
        lines.push(rest.slice(from, nl));
        from = nl + 1;
      }
      rest = rest.slice(from);
      for (const line of lines) {
        if (!line) continue;
        if (trailer) throw corrupt('entries after its trailer');
        if (!sawHeader) {
          const h = JSON.parse(line) as { [MAGIC]?: number; walk_started_ns?: string; root?: { m: number; u: number; g: number; mt: string } };
          if (h[MAGIC] !== VERSION || !h.root) throw corrupt('no header');
          sawHeader = true;
          onHeader?.({ walkStartedNs: BigInt(h.walk_started_ns ?? '0'), root: { mode: h.root.m, uid: h.root.u, gid: h.root.g, mtimeNs: BigInt(h.root.mt) } });
          continue;
        }
        if (line.startsWith('{"end":')) {
          trailer = (JSON.parse(line) as { end: ManifestTotals }).end;
          continue;
        }
        const e = decodeEntry(line);
        seen.entries++;
        if (e.type === 'file') {
          seen.files++;
          seen.bytes += e.size;
        }
        yield e;
      }
    }
  } catch (err) {
    if (err instanceof CagedError || (sourceError !== undefined && err === sourceError)) throw err;
    throw corrupt((err as Error).message);
  } finally {
    compressed.unpipe(unzstd);
    unzstd.destroy();
  }
  if (rest.trim()) throw corrupt('a partial last line');
  if (!trailer) throw corrupt('no trailer (cut short)');
  if (trailer.entries !== seen.entries || trailer.files !== seen.files || trailer.bytes !== seen.bytes) throw corrupt('a trailer that disagrees with its entries');
}

function corrupt(why: string): CagedError {
  return new CagedError('checksum_mismatch', `the snapshot's manifest is damaged: ${why}`);
}
