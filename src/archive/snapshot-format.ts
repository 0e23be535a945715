import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

/**
 * Snapshots are POSIX tar streams compressed with zstd. The packer runs GNU tar and zstd as child
 * processes: on two cores they are several times faster than a pure-Node pipeline, and the tree
 * being packed is the sandbox's own (trusted) root, quiesced by the caller. Untrusted archives
 * never reach these functions: imports are validated first (validate-import.ts).
 */
export const SNAPSHOT_EXTENSION = '.tar.zst';

export interface Tools {
  /** Resolves when every process exited 0; rejects with their stderr otherwise. */
  done: Promise<void>;
  kill(): void;
}

export interface ToolProcess<S extends Readable | Writable> extends Tools {
  stream: S;
}

function supervise(child: ChildProcess, what: string, signal?: AbortSignal): Promise<void> {
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    if (stderr.length < 8192) stderr += d;
  });
  const onAbort = () => child.kill('SIGKILL');
  signal?.addEventListener('abort', onAbort, { once: true });
  return new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, sig) => {
      signal?.removeEventListener('abort', onAbort);
      if (code === 0) resolve();
      else reject(new Error(`${what} failed (${sig ?? `exit ${code}`}): ${stderr.trim() || 'no output'}`));
    });
  });
}

/**
 * The C locale: GNU tar converts PAX names from UTF-8 to the locale's character set, so under a
 * single-byte locale a PAX name and a raw header name the import validator sees as different could
 * be one file to tar. Names are bytes in C, as the validator reads them.
 */
const TOOL_ENV = { ...process.env, LC_ALL: 'C' };
const TAR_CREATE = ['--create', '--file=-', '--numeric-owner', '--sparse'];
const TAR_EXTRACT = ['--extract', '--file=-', '--numeric-owner', '--same-permissions'];
const ZSTD_PACK = ['-1', '-T0', '-q', '-c'];
const ZSTD_UNPACK = ['-d', '-q', '-c'];

type Io = 'pipe' | 'ignore' | number;

/**
 * Runs `first | second` as two children joined by a pipe this process never touches; `input` is
 * the first one's stdin, `output` the second one's stdout (a pipe, or a file descriptor).
 * Both are supervised: done rejects with both tools' errors when one fails (the other usually
 * follows with EOF or a broken pipe), tar's first: its errors say what went wrong.
 */
function pipeTools(first: [string, string[], string], second: [string, string[], string], input: Io, output: Io, signal?: AbortSignal) {
  const a = spawn(first[0], first[1], { stdio: [input, 'pipe', 'pipe'], env: TOOL_ENV });
  let b: ChildProcess;
  try {
    b = spawn(second[0], second[1], { stdio: [a.stdout!, output, 'pipe'], env: TOOL_ENV });
  } catch (err) {
    a.kill('SIGKILL');
    throw err;
  } finally {
    // The second tool holds the pipe's read end now; this process must neither read nor keep it open.
    a.stdout!.destroy();
  }
  const aDone = supervise(a, first[2], signal);
  const bDone = supervise(b, second[2], signal);
  const ordered: [Promise<void>, Promise<void>] = first[0] === 'tar' ? [aDone, bDone] : [bDone, aDone];
  const done = Promise.allSettled(ordered).then((results) => {
    const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new Error(errors.map((e) => e.message).join('; '));
  });
  const kill = () => {
    a.kill('SIGKILL');
    b.kill('SIGKILL');
  };
  return { first: a, second: b, done, kill };
}

/*
 * Packing is `tar -c` of everything under root (numeric owners, modes, symlinks, empty dirs) piped
 * into zstd -1 multi-threaded; unpacking is zstd -d piped into tar -x. Always two children, never
 * tar's --use-compress-program: with that, GNU tar adds a process that copies every compressed
 * byte in 10 KiB records, which doubled the CPU of a restore.
 */

/** Packs root; the archive comes out of `stream`. */
export function packSnapshot(root: string, signal?: AbortSignal): ToolProcess<Readable> {
  const p = pipeTools(['tar', [...TAR_CREATE, '-C', root, '.'], 'tar (pack)'], ['zstd', ZSTD_PACK, 'zstd (pack)'], 'ignore', 'pipe', signal);
  return { stream: p.second.stdout!, done: p.done, kill: p.kill };
}

/** Packs root straight into an open file (the store's staged object): no byte passes through this process. */
export function packSnapshotToFile(root: string, fd: number, signal?: AbortSignal): Tools {
  const p = pipeTools(['tar', [...TAR_CREATE, '-C', root, '.'], 'tar (pack)'], ['zstd', ZSTD_PACK, 'zstd (pack)'], 'ignore', fd, signal);
  return { done: p.done, kill: p.kill };
}

/** Extracts a snapshot into an empty directory; the caller writes the archive to `stream`. */
export function unpackSnapshot(dest: string, signal?: AbortSignal): ToolProcess<Writable> {
  const p = pipeTools(['zstd', ZSTD_UNPACK, 'zstd (unpack)'], ['tar', [...TAR_EXTRACT, '-C', dest], 'tar (unpack)'], 'pipe', 'ignore', signal);
  return { stream: p.first.stdin!, done: p.done, kill: p.kill };
}

/** Extracts the snapshot in a local file into an empty directory; zstd reads the file itself. */
export function unpackSnapshotFile(file: string, dest: string, signal?: AbortSignal): Tools {
  const p = pipeTools(['zstd', [...ZSTD_UNPACK, '--', file], 'zstd (unpack)'], ['tar', [...TAR_EXTRACT, '-C', dest], 'tar (unpack)'], 'ignore', 'ignore', signal);
  return { done: p.done, kill: p.kill };
}

/** pigz when the host has it (gzip on every core), else gzip; looked up once. */
let gzipTool: string | undefined;
function gzipCompressor(): string {
  gzipTool ??= spawnSync('sh', ['-c', 'command -v pigz'], { encoding: 'utf8' }).status === 0 ? 'pigz' : 'gzip';
  return gzipTool;
}

type Transcoder = { input: Writable; output: Readable; done: Promise<void>; kill(): void };

/** zstd → gzip transcoder for exports: reads a snapshot on stdin, writes .tar.gz on stdout. Two children, both killed by kill(). */
export function transcodeToGzip(signal?: AbortSignal): Transcoder {
  const p = pipeTools(['zstd', ZSTD_UNPACK, 'zstd (export)'], [gzipCompressor(), ['-6', '-c'], 'gzip (export)'], 'pipe', 'pipe', signal);
  return { input: p.first.stdin!, output: p.second.stdout!, done: p.done, kill: p.kill };
}

/** gzip → zstd transcoder for imports (the archive was validated before). Two children, both killed by kill(). */
export function transcodeFromGzip(signal?: AbortSignal): Transcoder {
  const p = pipeTools(['gzip', ['-d', '-c'], 'gzip (import)'], ['zstd', ZSTD_PACK, 'zstd (import)'], 'pipe', 'pipe', signal);
  return { input: p.first.stdin!, output: p.second.stdout!, done: p.done, kill: p.kill };
}

/** Packs a tree as .tar.gz (exports of chunked snapshots, rebuilt in a scratch directory first). Two children, both killed by kill(). */
export function packTreeGzip(root: string, signal?: AbortSignal): ToolProcess<Readable> {
  const p = pipeTools(['tar', [...TAR_CREATE, '-C', root, '.'], 'tar (export)'], [gzipCompressor(), ['-6', '-c'], 'gzip (export)'], 'ignore', 'pipe', signal);
  return { stream: p.second.stdout!, done: p.done, kill: p.kill };
}

/** Extracts a .tar.gz (an import, validated before) into an empty directory; the caller writes the archive to `stream`. */
export function unpackGzip(dest: string, signal?: AbortSignal): ToolProcess<Writable> {
  const p = pipeTools(['gzip', ['-d', '-c'], 'gzip (import)'], ['tar', [...TAR_EXTRACT, '-C', dest], 'tar (import)'], 'pipe', 'ignore', signal);
  return { stream: p.first.stdin!, done: p.done, kill: p.kill };
}
