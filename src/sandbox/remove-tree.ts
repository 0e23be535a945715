import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/**
 * Deletes a directory tree (missing is fine) with `rm -rf`. A sandbox root holds tens of thousands
 * of files: Node's recursive fs.rm is no faster on such a tree and allocates for every entry, which
 * grew the worker by 100-170 MB while a 4 GiB root was removed (about 3 MB with rm -rf).
 * --one-file-system keeps it from descending into anything mounted inside the tree.
 */
export async function removeTree(dir: string): Promise<void> {
  await execFileAsync('rm', ['-rf', '--one-file-system', '--', dir]);
}
