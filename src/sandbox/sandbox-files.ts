import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { randomSuffix } from '../shared/ids.js';
import { CagedError } from '../shared/errors.js';
import { assertFdInside, makeParents, pathSegments, removeCreated, resolveInRoot } from './sandbox-paths.js';

/**
 * Opens a regular file for reading. O_NONBLOCK keeps a FIFO planted in the sandbox from hanging the
 * open (regular files ignore it); O_NOFOLLOW refuses a link that appeared after the checks.
 */
export async function readSandboxFile(root: string, relPath: string): Promise<Readable> {
  const { abs, stat } = await resolveInRoot(root, relPath);
  if (!stat) throw new CagedError('not_found', `no such file: ${relPath}`);
  if (stat.isDirectory()) throw new CagedError('invalid_input', `is a directory: ${relPath}`);
  if (!stat.isFile()) throw new CagedError('invalid_input', `not a regular file: ${relPath}`);
  let handle;
  try {
    handle = await fs.open(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CagedError('not_found', `no such file: ${relPath}`);
    if (code === 'ELOOP') throw new CagedError('invalid_input', `path goes through a symlink: ${relPath}`);
    throw err;
  }
  try {
    await assertFdInside(handle.fd, await fs.realpath(root));
    if (!(await handle.stat()).isFile()) throw new CagedError('invalid_input', `not a regular file: ${relPath}`);
  } catch (err) {
    await handle.close();
    throw err;
  }
  return handle.createReadStream();
}

/**
 * Streams the body into a temporary file beside the target and renames it into place, so a reader
 * (or a snapshot) sees either the old file or the whole new one, never a half-written one.
 */
export async function writeSandboxFile(root: string, relPath: string, body: Readable): Promise<void> {
  const { stat } = await resolveInRoot(root, relPath);
  if (stat?.isDirectory()) throw new CagedError('invalid_input', `is a directory: ${relPath}`);
  // A refused or failed upload leaves nothing behind: neither its temporary file nor the directories made for it.
  const created: string[] = [];
  let handle;
  let parent: string;
  let target: string;
  let tmp: string;
  try {
    parent = await makeParents(root, relPath, created);
    target = path.join(parent, pathSegments(relPath).at(-1) as string);
    // The temporary name must fit NAME_MAX too when the target's name is already near it.
    const base = path.basename(target);
    tmp = path.join(parent, `.${Buffer.byteLength(base) > 200 ? 'long-name' : base}.caged-${randomSuffix(8)}.tmp`);
    handle = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, stat?.mode ?? 0o644);
  } catch (err) {
    await removeCreated(created);
    throw err;
  }
  try {
    await assertFdInside(handle.fd, await fs.realpath(root));
    // An existing file keeps its permissions (an executable script stays executable); umask must not narrow them.
    if (stat) await handle.chmod(stat.mode & 0o7777);
    // The stream owns the handle from here and closes it when the body ends or fails.
    await pipeline(body, handle.createWriteStream());
    await fs.rename(tmp, target);
  } catch (err) {
    await handle.close().catch(() => {});
    await fs.rm(tmp, { force: true });
    await removeCreated(created);
    throw err;
  }
}

export async function deleteSandboxFile(root: string, relPath: string): Promise<void> {
  const { abs, stat } = await resolveInRoot(root, relPath);
  if (!stat) throw new CagedError('not_found', `no such file: ${relPath}`);
  if (stat.isDirectory()) throw new CagedError('invalid_input', `is a directory: ${relPath}`);
  try {
    await fs.unlink(abs);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new CagedError('not_found', `no such file: ${relPath}`);
    throw err;
  }
}
