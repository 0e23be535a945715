/**
 * Every key caged writes to the object store, in one place (as Velero's ObjectStoreLayout): the
 * API, the workflows, the data movers, the garbage collector and the consistency checker all ask
 * this module, and a key it cannot classify was not written by caged. Pure functions, no Node
 * built-ins: workflow code imports it too.
 *
 * - `snapshots/<sandbox>/<snapshot>/…`: everything of one snapshot: its manifest (the chunked
 *   format), its export and the checksum of that, and an import's upload while it is converted;
 * - `snapshots/<sandbox>/<snapshot>.tar.zst`: a snapshot in the single-archive format of earlier
 *   versions (still restorable; no new ones are written);
 * - `exports/<snapshot>.tar.gz[.sha256]`, `imports/<snapshot>-<x>.tar.gz`: the export and import
 *   keys of earlier versions, deleted with their snapshot;
 * - `packs/<account>/<xx>/<pack>.pack`: the account's chunk store (see src/chunks/pack-format.ts).
 */

const SNAPSHOT_ID = 'snap-[a-z0-9]+';
const SANDBOX_ID = 'cage-[a-z0-9]+';
const ACCOUNT_ID = '[A-Za-z0-9_-]+';
const PACK_ID = '[a-f0-9]{32}';

export const layout = {
  snapshotPrefix: (sandboxId: string, snapshotId: string) => `snapshots/${sandboxId}/${snapshotId}/`,
  /** The tree and chunk references of a chunked snapshot. */
  manifest: (sandboxId: string, snapshotId: string) => `snapshots/${sandboxId}/${snapshotId}/manifest.ndjson.zst`,
  /** A snapshot of the single-archive format (tar.zst) of earlier versions. */
  archive: (sandboxId: string, snapshotId: string) => `snapshots/${sandboxId}/${snapshotId}.tar.zst`,
  export: (sandboxId: string, snapshotId: string) => `snapshots/${sandboxId}/${snapshotId}/export.tar.gz`,
  exportChecksum: (sandboxId: string, snapshotId: string) => `snapshots/${sandboxId}/${snapshotId}/export.tar.gz.sha256`,
  importUpload: (sandboxId: string, snapshotId: string, suffix: string) => `snapshots/${sandboxId}/${snapshotId}/upload-${suffix}.tar.gz`,
  /** Export keys of earlier versions; deleted with their snapshot. */
  legacyExports: (snapshotId: string) => [`exports/${snapshotId}.tar.gz`, `exports/${snapshotId}.tar.gz.sha256`],
  packsRoot: 'packs/',
  packPrefix: (accountId: string) => `packs/${accountId}/`,
  pack: (accountId: string, packId: string) => `packs/${accountId}/${packId.slice(0, 2)}/${packId}.pack`,
  /** Every key a snapshot may own besides its manifest or archive, for its deletion. */
  snapshotExtras: (sandboxId: string, snapshotId: string) => [
    layout.export(sandboxId, snapshotId),
    layout.exportChecksum(sandboxId, snapshotId),
    ...layout.legacyExports(snapshotId),
  ],
} as const;

export type KeyFamily = 'manifest' | 'archive' | 'export' | 'import' | 'pack';

export interface ClassifiedKey {
  family: KeyFamily;
  snapshotId?: string;
  accountId?: string;
  packId?: string;
}

const PATTERNS: [KeyFamily, RegExp, (m: RegExpExecArray) => Omit<ClassifiedKey, 'family'>][] = [
  ['manifest', new RegExp(`^snapshots/${SANDBOX_ID}/(${SNAPSHOT_ID})/manifest\\.ndjson\\.zst$`), (m) => ({ snapshotId: m[1] })],
  ['archive', new RegExp(`^snapshots/${SANDBOX_ID}/(${SNAPSHOT_ID})\\.tar\\.zst$`), (m) => ({ snapshotId: m[1] })],
  ['export', new RegExp(`^snapshots/${SANDBOX_ID}/(${SNAPSHOT_ID})/export\\.tar\\.gz(?:\\.sha256)?$`), (m) => ({ snapshotId: m[1] })],
  ['export', new RegExp(`^exports/(${SNAPSHOT_ID})\\.tar\\.gz(?:\\.sha256)?$`), (m) => ({ snapshotId: m[1] })],
  ['import', new RegExp(`^snapshots/${SANDBOX_ID}/(${SNAPSHOT_ID})/upload-[a-z0-9]+\\.tar\\.gz$`), (m) => ({ snapshotId: m[1] })],
  ['import', new RegExp(`^imports/(${SNAPSHOT_ID})-[a-z0-9]+\\.tar\\.gz$`), (m) => ({ snapshotId: m[1] })],
  ['pack', new RegExp(`^packs/(${ACCOUNT_ID})/[a-f0-9]{2}/(${PACK_ID})\\.pack$`), (m) => ({ accountId: m[1], packId: m[2] })],
];

/** The family of a key caged wrote, and whom it belongs to; undefined for any other key. */
export function classifyKey(key: string): ClassifiedKey | undefined {
  for (const [family, re, parts] of PATTERNS) {
    const m = re.exec(key);
    if (m) return { family, ...parts(m) };
  }
  return undefined;
}
