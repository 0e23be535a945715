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

/** Extracts a snapshot stream into an empty directory; the caller writes the stream to `stream`. */
export function unpackSnapshot(dest: string, signal?: AbortSignal): ToolProcess<Writable> {
  const child = spawn(
    'tar',
    ['--extract', '--file=-', '--numeric-owner', '--same-permissions', '--use-compress-program=zstd -d -q', '-C', dest],
    { stdio: ['pipe', 'ignore', 'pipe'] },
  );
  return { stream: child.stdin!, done: supervise(child, 'tar (unpack)', signal), kill: () => child.kill('SIGKILL') };
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
