import fs from 'node:fs/promises';
import path from 'node:path';
import { removeTree } from './remove-tree.js';

/**
 * Replacing a sandbox's root: the new tree is built in a staging directory beside the root, then
 * the two are swapped by renames (same filesystem, so nothing is copied). Every step is idempotent
 * and can resume after a crash between its renames; rollback puts the previous root back.
 */
export const stagingDir = (sandboxDir: string, operationId: string) => path.join(sandboxDir, `root.staging-${operationId}`);
export const previousDir = (sandboxDir: string, operationId: string) => path.join(sandboxDir, `root.previous-${operationId}`);
/** A root that is garbage: the one a rollback replaced, or the previous one after a commit. */
const discardDir = (sandboxDir: string, operationId: string) => path.join(sandboxDir, `root.discard-${operationId}`);
const rootOf = (sandboxDir: string) => path.join(sandboxDir, 'root');

async function exists(p: string): Promise<boolean> {
  return fs.lstat(p).then(
    () => true,
    () => false,
  );
}

/** A fresh, empty staging directory (whatever an earlier attempt left is removed). */
export async function prepareStaging(sandboxDir: string, operationId: string): Promise<string> {
  const dir = stagingDir(sandboxDir, operationId);
  await removeTree(dir);
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  return dir;
}

export async function removeStaging(sandboxDir: string, operationId: string): Promise<void> {
  await removeTree(stagingDir(sandboxDir, operationId));
}

export async function swapIn(sandboxDir: string, operationId: string): Promise<void> {
  const staging = stagingDir(sandboxDir, operationId);
  const previous = previousDir(sandboxDir, operationId);
  const root = rootOf(sandboxDir);
  if (!(await exists(staging))) {
    if (await exists(previous)) return; // swapped already
    throw new Error(`nothing staged for ${operationId}`);
  }
  if (await exists(root)) {
    if (await exists(previous)) throw new Error(`both the root and ${path.basename(previous)} exist; refusing to overwrite either`);
    await fs.rename(root, previous);
  }
  await fs.rename(staging, root);
}

/** Undoes swapIn: the previous root comes back, the restored one goes. */
export async function rollbackSwap(sandboxDir: string, operationId: string): Promise<void> {
  const previous = previousDir(sandboxDir, operationId);
  const root = rootOf(sandboxDir);
  if (await exists(previous)) {
    if (await exists(root)) {
      const discard = discardDir(sandboxDir, operationId);
      await removeTree(discard);
      await fs.rename(root, discard);
      await fs.rename(previous, root);
      await removeTree(discard);
    } else {
      await fs.rename(previous, root);
    }
  }
  await removeStaging(sandboxDir, operationId);
}

/**
 * After success the previous root is garbage: it is renamed out of the way at once (so no rollback
 * can bring it back), and removeDiscarded deletes it once the operation has reported success.
 * Deleting a large tree takes seconds per 20,000 files, which the operation need not wait for.
 */
export async function retireSwap(sandboxDir: string, operationId: string): Promise<void> {
  const previous = previousDir(sandboxDir, operationId);
  if (await exists(previous)) {
    const discard = discardDir(sandboxDir, operationId);
    await removeTree(discard);
    await fs.rename(previous, discard);
  }
  await removeStaging(sandboxDir, operationId);
}

export async function removeDiscarded(sandboxDir: string, operationId: string): Promise<void> {
  await removeTree(discardDir(sandboxDir, operationId));
}
