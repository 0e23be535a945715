import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';

export interface TreeEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  sha256?: string;
  size?: number;
  target?: string;
}

/** Everything that makes two trees equal for a user: paths, types, modes, bytes and link targets. */
export function describeTree(root: string): TreeEntry[] {
  const out: TreeEntry[] = [];
  const walk = (rel: string) => {
    const abs = path.join(root, rel);
    for (const name of fs.readdirSync(abs).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(path.join(root, r));
      const mode = st.mode & 0o7777;
      if (st.isSymbolicLink()) out.push({ path: r, type: 'symlink', mode: 0, target: fs.readlinkSync(path.join(root, r)) });
      else if (st.isDirectory()) {
        out.push({ path: r, type: 'dir', mode });
        walk(r);
      } else if (st.isFile()) {
        const sha256 = createHash('sha256').update(fs.readFileSync(path.join(root, r))).digest('hex');
        out.push({ path: r, type: 'file', mode, size: st.size, sha256 });
      } else throw new Error(`unexpected file type at ${r}`);
    }
  };
  walk('');
  return out;
}

export function sha256File(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Extracts a tar.zst or tar.gz with GNU tar, as a user would. */
export function gnuExtract(archive: string, dest: string, compression: 'zstd' | 'gzip'): void {
  fs.mkdirSync(dest, { recursive: true });
  execFileSync('tar', [compression === 'zstd' ? '--zstd' : '-z', '-xf', archive, '-C', dest]);
}

/** A tree with the cases that snapshots get wrong: empty dirs, symlinks, modes, binary and nested files. */
export function populateTree(root: string): void {
  fs.mkdirSync(path.join(root, 'proj/src/deep/er'), { recursive: true });
  fs.mkdirSync(path.join(root, 'empty-dir'));
  fs.mkdirSync(path.join(root, 'proj/empty-nested'));
  fs.writeFileSync(path.join(root, 'proj/src/main.py'), 'print("hi")\n');
  fs.chmodSync(path.join(root, 'proj/src/main.py'), 0o755);
  fs.writeFileSync(path.join(root, 'proj/secret.txt'), 'top secret\n');
  fs.chmodSync(path.join(root, 'proj/secret.txt'), 0o600);
  fs.writeFileSync(path.join(root, 'proj/src/deep/er/blob.bin'), Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 256)));
  fs.writeFileSync(path.join(root, 'empty-file'), '');
  fs.symlinkSync('proj/src/main.py', path.join(root, 'link-to-main'));
  fs.symlinkSync('does-not-exist', path.join(root, 'dangling'));
  fs.symlinkSync('../..', path.join(root, 'proj/src/up'));
}
