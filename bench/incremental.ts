import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Changes the bench applies to its data set between incremental snapshots: what a developer's
 * sandbox sees between two auto snapshots.
 */

/** Every regular file under dir, sorted (a stable order for choosing which to change). */
export function filesUnder(dir: string): { file: string; size: number }[] {
  const out: { file: string; size: number }[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push({ file: p, size: fs.statSync(p).size });
    }
  };
  walk(dir);
  return out;
}

/** Rewrites `share` of the small files (every n-th, starting at `offset`) with new bytes of the same size; returns the bytes written. */
export function touchSmallFiles(small: { file: string; size: number }[], share: number, offset: number): { files: number; bytes: number } {
  const step = Math.max(1, Math.round(1 / share));
  let files = 0;
  let bytes = 0;
  for (let i = offset % step; i < small.length; i += step) {
    fs.writeFileSync(small[i]!.file, randomBytes(small[i]!.size));
    files++;
    bytes += small[i]!.size;
  }
  return { files, bytes };
}

/** Overwrites 1 MiB in the middle of a file with new bytes. */
export function overwriteMiddle(file: string, bytes = 1024 * 1024): void {
  const size = fs.statSync(file).size;
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, randomBytes(bytes), 0, bytes, Math.floor(size / 2));
  } finally {
    fs.closeSync(fd);
  }
}
