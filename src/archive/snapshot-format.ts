import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

/**
 * Snapshots are POSIX tar streams compressed with zstd. The packer runs GNU tar and zstd as child
 * processes: on two cores they are several times faster than a pure-Node pipeline, and the tree
 * being packed is the sandbox's own (trusted) root, quiesced by the caller. Untrusted archives
 * never reach these functions: imports are validated first (validate-import.ts).
 */
export const SNAPSHOT_EXTENSION = '.tar.zst';

export interface ToolProcess<S extends Readable | Writable> {
  stream: S;
  /** Resolves when the process exits 0; rejects with its stderr otherwise. */
  done: Promise<void>;
  kill(): void;
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

/** `tar -c` of everything under root (numeric owners, modes, symlinks, empty dirs), zstd -1 multi-threaded. */
export function packSnapshot(root: string, signal?: AbortSignal): ToolProcess<Readable> {
  const child = spawn(
    'tar',
    ['--create', '--file=-', '--numeric-owner', '--sparse', '--use-compress-program=zstd -1 -T0 -q', '-C', root, '.'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return { stream: child.stdout!, done: supervise(child, 'tar (pack)', signal), kill: () => child.kill('SIGKILL') };
}

/**
 * Extracts a snapshot stream into an empty directory; the caller writes the stream to `stream`.
 * zstd and tar run as two children joined by a pipe: with --use-compress-program, GNU tar adds a
 * process that copies the archive to zstd in 10 KiB records, which doubled the CPU of a restore.
 */
export function unpackSnapshot(dest: string, signal?: AbortSignal): ToolProcess<Writable> {
  const zstd = spawn('zstd', ['-d', '-q', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const zstdDone = supervise(zstd, 'zstd (unpack)', signal);
  let tar: ChildProcess | undefined;
  let tarDone: Promise<void>;
  try {
    tar = spawn('tar', ['--extract', '--file=-', '--numeric-owner', '--same-permissions', '-C', dest], { stdio: [zstd.stdout!, 'ignore', 'pipe'] });
    tarDone = supervise(tar, 'tar (unpack)', signal);
  } catch (err) {
    tarDone = Promise.reject(err);
  } finally {
    // tar holds the pipe's read end now; this process must neither read nor keep it open.
    zstd.stdout!.destroy();
  }
  const done = Promise.allSettled([tarDone, zstdDone]).then(([t, z]) => {
    // When one fails the other usually follows (EOF, broken pipe): report both, tar's first.
    const errors = [t, z].flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new Error(errors.map((e) => e.message).join('; '));
  });
  const kill = () => {
    zstd.kill('SIGKILL');
    tar?.kill('SIGKILL');
  };
  return { stream: zstd.stdin!, done, kill };
}

/** zstd → gzip transcoder for exports: reads a snapshot on stdin, writes .tar.gz on stdout. */
export function transcodeToGzip(signal?: AbortSignal): { input: Writable; output: Readable; done: Promise<void>; kill(): void } {
  const child = spawn('sh', ['-c', 'zstd -d -q -c | (command -v pigz >/dev/null && exec pigz -6 -c || exec gzip -6 -c)'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  return { input: child.stdin!, output: child.stdout!, done: supervise(child, 'zstd|gzip', signal), kill: () => child.kill('SIGKILL') };
}

/** gzip → zstd transcoder for imports (the archive was validated before). */
export function transcodeFromGzip(signal?: AbortSignal): { input: Writable; output: Readable; done: Promise<void>; kill(): void } {
  const child = spawn('sh', ['-c', 'gzip -d -c | zstd -1 -T0 -q -c'], { stdio: ['pipe', 'pipe', 'pipe'] });
  return { input: child.stdin!, output: child.stdout!, done: supervise(child, 'gzip|zstd', signal), kill: () => child.kill('SIGKILL') };
}
