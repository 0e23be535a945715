/**
 * Every family of keys caged writes to the store, and the snapshot each key belongs to:
 * - `snapshots/<sandbox>/<snapshot>.tar.zst`: the snapshot archive (snapshotObjectKey);
 * - `exports/<snapshot>.tar.gz` and `….tar.gz.sha256`: an export and its checksum (exportKey);
 * - `imports/<snapshot>-<random>.tar.gz`: an upload being imported (service/import.ts).
 * A key outside these families was not written by caged, and the checker will not touch it.
 */
export type KeyFamily = 'snapshot' | 'export' | 'import';

const PATTERNS: [KeyFamily, RegExp][] = [
  ['snapshot', /^snapshots\/[^/]+\/(snap-[a-z0-9]+)\.tar\.zst$/],
  ['export', /^exports\/(snap-[a-z0-9]+)\.tar\.gz(?:\.sha256)?$/],
  ['import', /^imports\/(snap-[a-z0-9]+)-[a-z0-9]+\.tar\.gz$/],
];

export function classifyKey(key: string): { family: KeyFamily; snapshotId: string } | undefined {
  for (const [family, re] of PATTERNS) {
    const m = re.exec(key);
    if (m) return { family, snapshotId: m[1]! };
  }
  return undefined;
}
