import path from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { MAX_NAME_BYTES } from '../sandbox/sandbox-paths.js';
import { CagedError } from '../shared/errors.js';
import { AmbiguousHeader, TarHeaderScanner } from './tar-headers.js';

export interface ImportLimits {
  maxEntries: number;
  maxPathLength: number;
  maxUncompressedBytes: number;
  maxCompressedBytes: number;
  /**
   * Most bytes the archive's files may add up to once extracted (the snapshot's logical size).
   * Checked against each header's declared size, so a refusal comes before the body is inflated.
   */
  maxTreeBytes?: number;
}

/**
 * entries counts every accepted header (a directory listed twice counts twice; PAX/GNU metadata
 * headers are not entries). uncompressedBytes is the length of the decompressed tar stream,
 * headers and padding included, which is what maxUncompressedBytes bounds; compressedBytes is
 * what was read from the source.
 */
export interface ImportSummary {
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  uncompressedBytes: number;
  compressedBytes: number;
  /** Sum of the sizes of the archive's regular files: what the tree expands to. */
  treeBytes: number;
}

type Kind = 'file' | 'dir' | 'symlink';

const KIND_BY_TYPE: ReadonlyMap<string, Kind | 'hardlink'> = new Map([
  ['File', 'file'],
  ['OldFile', 'file'],
  ['ContiguousFile', 'file'],
  ['Directory', 'dir'],
  ['SymbolicLink', 'symlink'],
  ['Link', 'hardlink'],
]);

const BLOCK = 512;
// Linux gives up after 40 hops (MAXSYMLINKS); past that the kernel refuses to resolve, so no escape.
const MAX_SYMLINK_HOPS = 40;
// Messages are logged and returned to the uploader; a hostile name must not flood either.
const MAX_NAME_IN_MESSAGE = 200;
// Tar writers pad to their record size: 10 KiB for GNU tar's default, 1 MiB at its largest blocking factor.
const MAX_TRAILING_PADDING = 8 * 1024 * 1024;

/** Streams a .tar.gz and refuses anything hostile; resolves with a summary or rejects with CagedError('invalid_archive', msg) or CagedError('limit_exceeded', msg) (from src/shared/errors.ts). Never buffers the whole archive. */
export async function validateTarGz(source: Readable, limits: ImportLimits, signal?: AbortSignal): Promise<ImportSummary> {
  assertLimits(limits);
  if (signal?.aborted) {
    source.destroy();
    throw signal.reason;
  }

  const v = new TarValidator(limits);
  let compressedBytes = 0;
  let magic = Buffer.alloc(0);

  const meter = new Transform({
    transform(chunk: Buffer | Uint8Array | string, _enc, cb) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
      compressedBytes += buf.length;
      if (compressedBytes > limits.maxCompressedBytes) {
        return cb(new CagedError('limit_exceeded', `compressed archive is larger than ${limits.maxCompressedBytes} bytes`));
      }
      if (magic.length < 2) {
        magic = Buffer.concat([magic, buf.subarray(0, 2 - magic.length)]);
        // Checked here rather than left to zlib so "not gzip" is told apart from "damaged gzip".
        if (magic.length === 2 && (magic[0] !== 0x1f || magic[1] !== 0x8b)) {
          return cb(new CagedError('invalid_archive', 'not a gzip stream'));
        }
      }
      cb(null, buf);
    },
    flush(cb) {
      cb(magic.length < 2 ? new CagedError('invalid_archive', 'not a gzip stream (input is empty or too short)') : null);
    },
  });

  const gunzip = zlib.createGunzip();

  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      try {
        v.push(chunk);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    final(cb) {
      try {
        v.finish();
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
  // Parser events normally fire inside push(), which reports them itself; this covers any that do not.
  v.onLateFailure = (err) => sink.destroy(err as Error);

  const onAbort = () => v.fail(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // pipeline destroys every stage on the first error, so a bomb stops inflating at once.
    await pipeline(source, meter, gunzip, sink);
  } catch (err) {
    throw v.failure ?? mapStreamError(err);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  if (v.failure) throw v.failure;
  return { ...v.counts(), compressedBytes };
}

function assertLimits(limits: ImportLimits): void {
  for (const [key, value] of Object.entries(limits)) {
    if (value === undefined && key === 'maxTreeBytes') continue;
    if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`ImportLimits.${key} must be a positive integer`);
  }
}

function mapStreamError(err: unknown): unknown {
  if (err instanceof CagedError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'Z_BUF_ERROR') return new CagedError('invalid_archive', 'truncated archive: gzip stream ends early');
  if (typeof code === 'string' && code.startsWith('Z_')) {
    return new CagedError('invalid_archive', `corrupt gzip data: ${(err as Error).message}`);
  }
  // Source failures (network, client disconnect) are not the archive's fault: pass them on as they are.
  return err;
}

function q(name: string): string {
  const shown = name.length > MAX_NAME_IN_MESSAGE ? `${name.slice(0, MAX_NAME_IN_MESSAGE)}…` : name;
  return JSON.stringify(shown);
}

function invalid(message: string): CagedError {
  return new CagedError('invalid_archive', message);
}

function isAllZero(buf: Buffer, from: number): boolean {
  for (let i = from; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** A node of the archive's virtual tree; 'implied' marks a directory only known as some entry's parent. */
interface TreeNode {
  kind: Kind | 'implied';
  children?: Map<string, TreeNode>;
  target?: string;
}

class TarValidator {
  failure: unknown;
  onLateFailure?: (err: unknown) => void;

  private readonly parser: Parser;
  private entries = 0;
  private files = 0;
  private dirs = 0;
  private symlinks = 0;
  private declaredBytes = 0;
  private treeBytes = 0;
  private uncompressedBytes = 0;
  private parserPos = 0;
  private lead = Buffer.alloc(0);
  private current?: ReadEntry;
  private sawEof = false;
  private paddingBytes = 0;
  private pendingNullBlock = false;
  private inPush = false;
  private readonly root: TreeNode = { kind: 'dir', children: new Map() };
  private readonly links: Array<{ segments: string[]; target: string; name: string }> = [];
  /** GNU tar's reading of the same headers (it extracts what this accepts): the two must agree. */
  private readonly scanner = new TarHeaderScanner();

  constructor(private readonly limits: ImportLimits) {
    // strict turns every parser warning (bad checksum, truncation, bad header) into an error.
    // brotli/zstd false: the gzip layer is ours, the parser must not sniff and decompress again.
    this.parser = new Parser({ strict: true, brotli: false, zstd: false });
    this.parser.on('entry', (entry: ReadEntry) => this.onEntry(entry));
    this.parser.on('ignoredEntry', (entry: ReadEntry) => this.onIgnoredEntry(entry));
    this.parser.on('nullBlock', () => (this.pendingNullBlock = true));
    this.parser.on('eof', () => (this.sawEof = true));
    this.parser.on('error', (err: unknown) => this.fail(this.mapParserError(err)));
    this.parser.on('warn', (code: string, message: string) => this.fail(invalid(`invalid tar data: ${code}: ${message}`)));
  }

  fail(err: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    if (!this.inPush) this.onLateFailure?.(err);
  }

  counts(): Omit<ImportSummary, 'compressedBytes'> {
    return { entries: this.entries, files: this.files, dirs: this.dirs, symlinks: this.symlinks, uncompressedBytes: this.uncompressedBytes, treeBytes: this.treeBytes };
  }

  push(chunk: Buffer): void {
    if (this.failure !== undefined) throw this.failure;
    this.uncompressedBytes += chunk.length;
    if (this.uncompressedBytes > this.limits.maxUncompressedBytes) {
      throw new CagedError('limit_exceeded', `archive expands beyond ${this.limits.maxUncompressedBytes} bytes`);
    }
    if (this.lead.length < 2) {
      this.lead = Buffer.concat([this.lead, chunk.subarray(0, 2 - this.lead.length)]);
      // The parser would silently gunzip a second layer, which would escape our byte accounting.
      if (this.lead.length === 2 && this.lead[0] === 0x1f && this.lead[1] === 0x8b) {
        throw invalid('nested compression is not allowed (the tar stream is itself gzipped)');
      }
    }
    this.inPush = true;
    try {
      let off = 0;
      while (off < chunk.length) {
        if (this.sawEof) {
          // Readers that skip zero blocks (tar -i) would find entries here that we never checked.
          if (!isAllZero(chunk, off)) throw invalid('unexpected data after the end-of-archive marker');
          // Record padding is a few KiB (GNU tar: 10 KiB records); gigabytes of zeros after the
          // marker would only cost inflating them, up to the decompression bound. Past the
          // padding allowance the archive counts as expanding beyond its limit.
          this.paddingBytes += chunk.length - off;
          if (this.paddingBytes > MAX_TRAILING_PADDING) {
            const bound = this.uncompressedBytes - this.paddingBytes + MAX_TRAILING_PADDING;
            throw new CagedError(
              'limit_exceeded',
              `archive expands beyond ${bound} bytes: more than ${MAX_TRAILING_PADDING} bytes of zeros follow the end-of-archive marker`,
            );
          }
          return;
        }
        // Headers go in one block at a time so end-of-archive is seen at its exact offset and
        // trailing bytes never pile up inside the parser; bodies go in whole.
        const body = this.current?.blockRemain ?? 0;
        const room = body > 0 ? body : BLOCK - (this.parserPos % BLOCK);
        const n = Math.min(room, chunk.length - off);
        const piece = chunk.subarray(off, off + n);
        try {
          this.scanner.push(piece);
        } catch (err) {
          if (err instanceof AmbiguousHeader) throw invalid(`ambiguous tar headers (GNU tar would read them differently): ${err.message}`);
          throw err;
        }
        this.parser.write(piece);
        this.parserPos += n;
        off += n;
        if (this.failure !== undefined) throw this.failure;
      }
    } finally {
      this.inPush = false;
    }
  }

  finish(): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.uncompressedBytes === 0 || (this.entries === 0 && this.sawEof)) throw invalid('archive is empty');
    if (!this.sawEof) {
      this.inPush = true;
      try {
        // Lets the parser report a body cut short or a stream that never looked like tar.
        this.parser.end();
      } finally {
        this.inPush = false;
      }
      if (this.failure !== undefined) throw this.failure;
      throw invalid(this.entries === 0 ? 'not a tar archive' : 'truncated archive: end-of-archive marker missing');
    }
    if (this.scanner.waiting > 0) throw invalid('ambiguous tar headers (GNU tar would read them differently): entries node-tar did not see');
    this.checkSymlinkChains();
  }

  private mapParserError(err: unknown): CagedError {
    if (err instanceof CagedError) return err;
    const e = err as Error & { tarCode?: string; entry?: { path?: string }; header?: { path?: string } };
    const message = e?.message ?? String(err);
    const name = e?.entry?.path ?? e?.header?.path;
    const where = name ? ` at ${q(name)}` : '';
    if (/truncated/i.test(message)) return invalid(`truncated archive${where}: ${message}`);
    if (/unrecognized archive format/i.test(message)) return invalid('not a tar archive');
    return invalid(`invalid tar data${where}: ${message}`);
  }

  private onIgnoredEntry(entry: ReadEntry): void {
    if (this.failure !== undefined) return;
    this.current = entry;
    this.fail(
      entry.meta
        ? invalid(`metadata header ${entry.type} is too large (${entry.size} bytes) near ${q(entry.path)}`)
        : invalid(`entry type ${entry.type} is not allowed: ${q(entry.path)}`),
    );
  }

  private onEntry(entry: ReadEntry): void {
    // The body is never needed, and draining it keeps the parser moving synchronously.
    entry.resume();
    this.current = entry;
    if (this.failure !== undefined) return;
    try {
      this.checkEntry(entry);
    } catch (err) {
      this.fail(err);
    }
  }

  /** The entry as node-tar read it must be the entry GNU tar will read from the same bytes. */
  private checkSameReading(entry: ReadEntry): void {
    const gnu = this.scanner.take();
    const node = { type: entry.header.typeKey, path: entry.path, linkpath: entry.linkpath ?? '', size: entry.size, mode: entry.mode ?? 0 };
    if (
      !gnu ||
      gnu.type !== node.type ||
      gnu.path !== node.path ||
      (gnu.linkpath !== node.linkpath && (node.type === '1' || node.type === '2')) ||
      gnu.size !== node.size ||
      gnu.mode !== node.mode
    ) {
      throw invalid(`ambiguous tar headers (GNU tar would read them differently) at ${q(node.path)}`);
    }
  }

  private checkEntry(entry: ReadEntry): void {
    const name = entry.path;
    this.entries++;
    if (this.entries > this.limits.maxEntries) {
      throw new CagedError('limit_exceeded', `too many entries: more than ${this.limits.maxEntries} (at ${q(name)})`);
    }
    if (this.pendingNullBlock) {
      // GNU tar stops at a lone zero block while node-tar reads on: the two would disagree on content.
      throw invalid(`zero block before entry ${q(name)}`);
    }
    this.checkSameReading(entry);

    const type = KIND_BY_TYPE.get(entry.type);
    if (!type) throw invalid(`entry type ${entry.type} is not allowed: ${q(name)}`);
    // A hardlink is one more name of a regular file: in the tree it is that file.
    const kind: Kind = type === 'hardlink' ? 'file' : type;

    const segments = this.checkPath(name);
    if (segments.length === 0 && kind !== 'dir') throw invalid(`${kind} entry names the archive root: ${q(name)}`);

    const mode = entry.mode ?? 0;
    if (mode & 0o6000) throw invalid(`setuid/setgid bits are not allowed: ${q(name)} (mode ${mode.toString(8)})`);

    // header.size is what the parser uses to find the next header; entry.size may carry a PAX
    // override on top. If they differ, other readers may split the stream differently.
    const size = entry.header.size;
    if (kind !== 'dir' && (size === undefined || !Number.isSafeInteger(size) || size < 0)) {
      throw invalid(`invalid size for ${q(name)}`);
    }
    if (entry.size !== (size ?? 0)) throw invalid(`conflicting sizes in headers of ${q(name)}`);
    if (kind === 'symlink' && entry.size > 0) throw invalid(`symlink carries data: ${q(name)}`);
    if (type === 'hardlink' && entry.size > 0) throw invalid(`hardlink carries data: ${q(name)}`);
    this.declaredBytes += entry.size;
    if (this.declaredBytes > this.limits.maxUncompressedBytes) {
      throw new CagedError(
        'limit_exceeded',
        `declared sizes exceed ${this.limits.maxUncompressedBytes} bytes at ${q(name)} (${entry.size} bytes)`,
      );
    }

    if (kind === 'file') {
      this.treeBytes += entry.size;
      const max = this.limits.maxTreeBytes;
      if (max !== undefined && this.treeBytes > max) {
        throw new CagedError(
          'limit_exceeded',
          `limit snapshot_bytes exceeded: the archive's files expand to more than ${max} bytes (at ${q(name)}, ${entry.size} bytes)`,
          { limit: 'snapshot_bytes', max },
        );
      }
    }

    let target: string | undefined;
    if (kind === 'symlink') {
      target = entry.linkpath ?? '';
      this.checkLinkTarget(name, segments, target);
    }
    if (type === 'hardlink') this.checkHardlinkTarget(name, entry.linkpath ?? '');

    this.insert(name, segments, kind, target);
    if (kind === 'file') this.files++;
    else if (kind === 'dir') this.dirs++;
    else this.symlinks++;
  }

  /** Returns the normalised path as segments; [] is the archive root ('.' or './'). */
  private checkPath(name: string): string[] {
    if (Buffer.byteLength(name) > this.limits.maxPathLength) {
      throw new CagedError('limit_exceeded', `path longer than ${this.limits.maxPathLength} bytes: ${q(name)}`);
    }
    if (name === '') throw invalid('empty path');
    if (name.includes('\0')) throw invalid(`path contains a NUL byte: ${q(name)}`);
    if (name.startsWith('/')) throw invalid(`absolute path is not allowed: ${q(name)}`);
    if (/^[A-Za-z]:/.test(name)) throw invalid(`path with a drive letter is not allowed: ${q(name)}`);
    if (name.includes('\\')) throw invalid(`path contains a backslash: ${q(name)}`);
    if (name.split('/').includes('..')) throw invalid(`path contains a '..' segment: ${q(name)}`);
    // 'f/.' normalises to 'f' here, but GNU tar makes a directory 'f' of it, whatever its type.
    const trimmed = name.replace(/\/+$/, '');
    if (trimmed !== '.' && trimmed.endsWith('/.')) throw invalid(`path ends in a '.' segment: ${q(name)}`);
    const normalized = path.posix.normalize(name).replace(/\/+$/, '');
    if (normalized === '' || normalized === '.') return [];
    const segments = normalized.split('/');
    if (path.posix.isAbsolute(normalized) || segments.includes('..')) throw invalid(`path escapes the archive root: ${q(name)}`);
    // No Linux file system holds such a name: refused here, before the store is written, rather
    // than found by the extractor as ENAMETOOLONG and retried as if the disk were at fault.
    const long = segments.find((s) => Buffer.byteLength(s) > MAX_NAME_BYTES);
    if (long !== undefined) {
      throw invalid(`path component longer than ${MAX_NAME_BYTES} bytes: ${q(long)} in ${q(name)}`);
    }
    return segments;
  }

  private checkLinkTarget(name: string, segments: string[], target: string): void {
    if (target === '') throw invalid(`symlink without a target: ${q(name)}`);
    if (Buffer.byteLength(target) > this.limits.maxPathLength) {
      throw new CagedError('limit_exceeded', `symlink target longer than ${this.limits.maxPathLength} bytes: ${q(name)}`);
    }
    if (target.includes('\0')) throw invalid(`symlink target contains a NUL byte: ${q(name)}`);
    if (/^[A-Za-z]:/.test(target)) throw invalid(`symlink with a drive-letter target is not allowed: ${q(name)} -> ${q(target)}`);
    if (target.includes('\\')) throw invalid(`symlink target contains a backslash: ${q(name)} -> ${q(target)}`);
    // An absolute target (a virtualenv's python3 -> /usr/bin/python3) names the sandbox's own
    // system, as the links its processes make do. It is safe because nothing is ever written or
    // read through a link: entries below a symlink are refused (insert), hardlinks must name a
    // regular file (checkHardlinkTarget), and the files API refuses symlinks on its paths.
    if (target.startsWith('/')) return;
    const dir = segments.length > 1 ? segments.slice(0, -1).join('/') : '.';
    const resolved = path.posix.normalize(path.posix.join(dir, target));
    if (resolved === '..' || resolved.startsWith('../') || path.posix.isAbsolute(resolved)) {
      throw invalid(`symlink points outside the archive: ${q(name)} -> ${q(target)}`);
    }
  }

  /**
   * A hardlink names its target from the archive root, and an extractor links to whatever is at
   * that path when it gets there: only a regular file this archive already made is safe (not a
   * directory, not a symlink that an extractor might follow, not something the host has).
   */
  private checkHardlinkTarget(name: string, target: string): void {
    if (target === '') throw invalid(`hardlink without a target: ${q(name)}`);
    // GNU tar fails "Not a directory" on 'f/'; a name that is not UTF-8 node-tar shows with U+FFFD,
    // so the file it names cannot be told from others here.
    if (target.endsWith('/')) throw invalid(`hardlink target ends in '/': ${q(name)} -> ${q(target)}`);
    if (target.includes('\ufffd')) throw invalid(`hardlink target is not UTF-8: ${q(name)}`);
    let segments: string[];
    try {
      segments = this.checkPath(target);
    } catch (err) {
      if (err instanceof CagedError && err.code === 'invalid_archive') throw invalid(`hardlink ${q(name)} has an invalid target: ${err.message}`);
      throw err;
    }
    if (this.lookup(segments)?.kind !== 'file') {
      throw invalid(`hardlink target is not a regular file earlier in the archive: ${q(name)} -> ${q(target)}`);
    }
  }

  private insert(name: string, segments: string[], kind: Kind, target: string | undefined): void {
    let node = this.root;
    for (let i = 0; i < segments.length - 1; i++) {
      const seg = segments[i]!;
      node.children ??= new Map();
      let child = node.children.get(seg);
      if (!child) {
        child = { kind: 'implied' };
        node.children.set(seg, child);
      } else if (child.kind === 'symlink') {
        // Extracting this would write wherever the earlier symlink points.
        throw invalid(`${q(name)} goes through symlink ${q(segments.slice(0, i + 1).join('/'))}`);
      } else if (child.kind === 'file') {
        throw invalid(`${q(name)} goes through file ${q(segments.slice(0, i + 1).join('/'))}`);
      }
      node = child;
    }
    if (segments.length === 0) return; // the root is a directory already
    const last = segments[segments.length - 1]!;
    node.children ??= new Map();
    const existing = node.children.get(last);
    if (!existing) {
      node.children.set(last, kind === 'symlink' ? { kind, target: target! } : { kind });
      if (kind === 'symlink') this.links.push({ segments, target: target!, name });
      return;
    }
    if (kind === 'dir' && (existing.kind === 'dir' || existing.kind === 'implied')) {
      existing.kind = 'dir';
      return;
    }
    if (existing.kind === 'implied') throw invalid(`${kind} ${q(name)} replaces a directory used by earlier entries`);
    throw invalid(`duplicate entry ${q(name)}`);
  }

  private lookup(segments: readonly string[]): TreeNode | undefined {
    let node: TreeNode | undefined = this.root;
    for (const seg of segments) {
      node = node?.children?.get(seg);
      if (!node) return undefined;
    }
    return node;
  }

  /**
   * Each link was checked lexically on arrival, but '..' after a component that is itself a
   * symlink walks up from wherever that symlink points (e.g. `d -> .` then `e -> d/..`).
   * Resolving with the archive's own links, as the kernel would after extraction, catches that.
   */
  private checkSymlinkChains(): void {
    for (const link of this.links) {
      const stack = link.segments.slice(0, -1);
      let pending = link.target.split('/').reverse();
      let hops = 0;
      while (pending.length > 0) {
        const seg = pending.pop()!;
        if (seg === '' || seg === '.') continue;
        if (seg === '..') {
          if (stack.length === 0) {
            throw invalid(`symlink resolves outside the archive through other symlinks: ${q(link.name)} -> ${q(link.target)}`);
          }
          stack.pop();
          continue;
        }
        stack.push(seg);
        const node = this.lookup(stack);
        if (node?.kind === 'symlink') {
          if (++hops > MAX_SYMLINK_HOPS) break;
          // From an absolute link on, the path is the system's, not the archive's: no '..' of the
          // archive's own can climb out of it.
          if (node.target!.startsWith('/')) break;
          stack.pop();
          pending = pending.concat(node.target!.split('/').reverse());
        }
      }
    }
  }
}
