import fs, { type BigIntStats } from 'node:fs';
import path from 'node:path';

export interface WalkedEntry {
  /** Relative to the root, '/'-separated raw bytes. */
  path: Buffer;
  stat: BigIntStats;
}

const SEP = Buffer.from('/');

/**
 * The entries below `root` in tree order (manifest.ts treeOrder): depth first, each directory's
 * names sorted by their bytes, a directory before what it holds. Synchronous lstat calls on
 * purpose: on a quiesced tree of many small files they cost a few microseconds each, where a
 * promise per call costs several times that; the caller takes entries in slices and yields to the
 * event loop between them. Names are raw bytes, so names that are not UTF-8 survive. Symlinks are
 * not followed.
 */
export function* walkTree(root: string): Generator<WalkedEntry> {
  const rootBuf = Buffer.from(path.resolve(root));
  const stack: { rel: Buffer | null; names: Buffer[]; next: number }[] = [{ rel: null, names: readNames(rootBuf), next: 0 }];
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    if (top.next >= top.names.length) {
      stack.pop();
      continue;
    }
    const name = top.names[top.next++]!;
    const rel = top.rel ? Buffer.concat([top.rel, SEP, name]) : name;
    const abs = Buffer.concat([rootBuf, SEP, rel]);
    const stat = fs.lstatSync(abs, { bigint: true });
    yield { path: rel, stat };
    if (stat.isDirectory()) stack.push({ rel, names: readNames(abs), next: 0 });
  }
}

function readNames(dir: Buffer): Buffer[] {
  return fs.readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
}

/** The absolute path of an entry, as raw bytes for fs calls. */
export function absolutePath(root: string, rel: Buffer): Buffer {
  return Buffer.concat([Buffer.from(path.resolve(root)), SEP, rel]);
}
