import fs from 'node:fs/promises';
import path from 'node:path';
import { CagedError } from '../shared/errors.js';
import { SANDBOX_ID_RE } from '../shared/ids.js';

export const TEMPLATE_NAME_RE = /^[a-z0-9-]{1,40}$/;
/** NAME_MAX and a PATH_MAX that leaves room for the sandbox's own location. */
export const MAX_NAME_BYTES = 255;
export const MAX_PATH_BYTES = 3072;

export function assertSandboxId(id: string): void {
  if (!SANDBOX_ID_RE.test(id)) throw new CagedError('invalid_input', `invalid sandbox id: ${JSON.stringify(id)}`);
}

/**
 * Splits a caller's path into segments below the root. '.' and empty segments are dropped, so 'a//./b'
 * means 'a/b'; anything that could name a place outside the root is refused rather than normalised.
 */
export function pathSegments(relPath: string): string[] {
  if (relPath.includes('\0')) throw new CagedError('invalid_input', 'path contains a NUL byte');
  if (path.posix.isAbsolute(relPath)) throw new CagedError('invalid_input', `path must be relative: ${relPath}`);
  const segments = relPath.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) throw new CagedError('invalid_input', `path must not contain '..': ${relPath}`);
  if (segments.length === 0) throw new CagedError('invalid_input', 'path is empty');
  // Checked here so the file system never answers ENAMETOOLONG with the server's own path in it.
  if (segments.some((s) => Buffer.byteLength(s) > MAX_NAME_BYTES)) {
    throw new CagedError('invalid_input', `a path component is longer than ${MAX_NAME_BYTES} bytes`);
  }
  if (Buffer.byteLength(relPath) > MAX_PATH_BYTES) throw new CagedError('invalid_input', `path is longer than ${MAX_PATH_BYTES} bytes`);
  return segments;
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Walks the existing components of the path with lstat and refuses a symlink anywhere, so that a link
 * planted inside the sandbox (`ln -s / escape`) cannot carry a read or write outside the root.
 * Returns the absolute path and the lstat of the final component, if it exists.
 */
export async function resolveInRoot(root: string, relPath: string): Promise<{ abs: string; stat?: import('node:fs').Stats }> {
  const segments = pathSegments(relPath);
  let current = root;
  for (const [i, segment] of segments.entries()) {
    current = path.join(current, segment);
    let stat;
    try {
      stat = await fs.lstat(current);
    } catch (err) {
      const code = errno(err);
      if (code === 'ENOENT') return { abs: path.join(root, ...segments) };
      if (code === 'ENOTDIR') throw new CagedError('not_found', `not a directory on the way to: ${relPath}`);
      throw err;
    }
    if (stat.isSymbolicLink()) throw new CagedError('invalid_input', `path goes through a symlink: ${segments.slice(0, i + 1).join('/')}`);
    if (i === segments.length - 1) return { abs: current, stat };
    if (!stat.isDirectory()) throw new CagedError('not_found', `not a directory on the way to: ${relPath}`);
  }
  throw new Error('unreachable');
}

/**
 * Creates the missing parent directories one at a time, refusing any existing component that is a
 * symlink or a file, so mkdir never follows a link out of the root.
 */
export async function makeParents(root: string, relPath: string, created: string[] = []): Promise<string> {
  const segments = pathSegments(relPath);
  let current = root;
  for (const segment of segments.slice(0, -1)) {
    current = path.join(current, segment);
    try {
      await fs.mkdir(current);
      created.push(current);
      continue;
    } catch (err) {
      if (errno(err) !== 'EEXIST') throw err;
    }
    const stat = await fs.lstat(current);
    if (stat.isSymbolicLink()) throw new CagedError('invalid_input', `path goes through a symlink: ${path.relative(root, current)}`);
    if (!stat.isDirectory()) throw new CagedError('invalid_input', `not a directory: ${path.relative(root, current)}`);
  }
  return current;
}

/** Undoes makeParents: removes the directories it created, deepest first, while they are still empty. */
export async function removeCreated(created: string[]): Promise<void> {
  for (const dir of [...created].reverse()) {
    try {
      await fs.rmdir(dir);
    } catch {
      return; // not empty any more (someone else wrote there): leave it and its parents
    }
  }
}

/**
 * The last guard against a swap between the checks and the open: the kernel's view of what the
 * descriptor actually names must lie inside the root.
 */
export async function assertFdInside(fd: number, realRoot: string): Promise<void> {
  const actual = await fs.readlink(`/proc/self/fd/${fd}`);
  if (!actual.startsWith(realRoot + path.sep)) throw new CagedError('invalid_input', 'path resolves outside the sandbox');
}
