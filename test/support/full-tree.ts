import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';

/** One entry as a restore must reproduce it; names are hex where they need not be UTF-8. */
export interface FullEntry {
  path: string;
  type: string;
  mode: number;
  mtimeMs: number;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  target?: string;
  /** Paths sharing an inode: hardlinks. */
  linkGroup?: string;
  /** Allocated bytes below the size: a sparse file stayed sparse. */
  sparse?: boolean;
}

const typeOf = (st: fs.Stats) =>
  st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'char' : 'other';

/**
 * Everything of a tree a chunked snapshot keeps (describeTree's paths, types, modes and bytes, and
 * times, owners, hardlinks, FIFOs, holes and names that are not UTF-8), the root's own included.
 */
export function describeFullTree(root: string): FullEntry[] {
  const out: FullEntry[] = [];
  const inodes = new Map<number, string>();
  const visit = (rel: Buffer) => {
    const abs = rel.length ? Buffer.concat([Buffer.from(root + '/'), rel]) : Buffer.from(root);
    const st = fs.lstatSync(abs);
    const name = Buffer.from(rel.toString()).equals(rel) ? rel.toString() : `hex:${rel.toString('hex')}`;
    const e: FullEntry = { path: name, type: typeOf(st), mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs), uid: st.uid, gid: st.gid };
    if (st.isFile()) {
      e.size = st.size;
      e.sha256 = createHash('sha256').update(fs.readFileSync(abs)).digest('hex');
      e.sparse = st.blocks * 512 < st.size;
      if (st.nlink > 1) {
        e.linkGroup = inodes.get(st.ino) ?? name;
        inodes.set(st.ino, e.linkGroup);
      }
    }
    if (st.isSymbolicLink()) {
      e.target = fs.readlinkSync(abs, { encoding: 'buffer' }).toString('hex');
      e.mtimeMs = 0; // GNU tar and this restorer both set it, but some filesystems round it differently
    }
    out.push(e);
    if (st.isDirectory()) {
      const names = (fs.readdirSync(abs, { encoding: 'buffer' }) as Buffer[]).sort(Buffer.compare);
      for (const n of names) visit(rel.length ? Buffer.concat([rel, Buffer.from('/'), n]) : n);
    }
  };
  visit(Buffer.alloc(0));
  return out;
}

/** A tree with every kind of entry a snapshot must keep, sizes on both sides of the small-file bound. */
export function populateFullTree(root: string): void {
  fs.mkdirSync(path.join(root, 'proj/src/deep'), { recursive: true });
  fs.mkdirSync(path.join(root, 'empty-dir'), { mode: 0o750 });
  fs.writeFileSync(path.join(root, 'proj/src/main.py'), 'print("hi")\n', { mode: 0o755 });
  fs.writeFileSync(path.join(root, 'proj/secret.txt'), 'top secret\n', { mode: 0o600 });
  fs.writeFileSync(path.join(root, 'empty-file'), '');
  for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(root, `proj/src/deep/f${i}.txt`), `file ${i}\n`.repeat(i * 50));
  fs.writeFileSync(path.join(root, 'proj/large.bin'), randomBytes(6 * 1024 * 1024 + 12345));
  // The same content twice: stored once.
  fs.copyFileSync(path.join(root, 'proj/large.bin'), path.join(root, 'proj/large-copy.bin'));
  const sparse = fs.openSync(path.join(root, 'proj/sparse.img'), 'w');
  fs.writeSync(sparse, randomBytes(300_000), 0, 300_000, 8 * 1024 * 1024);
  fs.ftruncateSync(sparse, 24 * 1024 * 1024);
  fs.closeSync(sparse);
  fs.linkSync(path.join(root, 'proj/secret.txt'), path.join(root, 'proj/secret-link.txt'));
  fs.symlinkSync('proj/src/main.py', path.join(root, 'link-to-main'));
  fs.symlinkSync('does-not-exist', path.join(root, 'dangling'));
  execFileSync('mkfifo', [path.join(root, 'proj/pipe')]);
  fs.writeFileSync(Buffer.concat([Buffer.from(root + '/proj/'), Buffer.from([0x6e, 0xff, 0xfe, 0x2e, 0x74])]), 'latin-1 name\n');
  fs.chmodSync(path.join(root, 'proj/src'), 0o711);
  const past = new Date('2024-03-01T12:34:56.789Z');
  fs.utimesSync(path.join(root, 'proj/secret.txt'), past, past);
  fs.utimesSync(path.join(root, 'proj/src/deep'), past, past);
}
