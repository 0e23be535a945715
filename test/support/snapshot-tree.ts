import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { expect } from 'vitest';
import type { TestStack } from './stack.js';
import { gnuExtract, sha256File } from './tree.js';
import { getSnapshot } from '../../src/catalog/snapshots.js';
import { accountChunkKey } from '../../src/catalog/chunk-store.js';
import { chunkContext, isManifestKey } from '../../src/activities/chunk-context.js';
import { createMeter } from '../../src/activities/stream-meter.js';
import { restoreTree } from '../../src/chunks/tree-restorer.js';

/**
 * A ready snapshot's tree, rebuilt from the store into `dest` outside caged's operations: a chunked
 * one from its manifest and chunks (each checked), an archive of the earlier format by GNU tar. The
 * stored object's sha256 (manifest or archive) must be the catalog's.
 */
export async function extractSnapshot(stack: TestStack, snapshotId: string, dest: string): Promise<void> {
  const snap = (await getSnapshot(stack.db, snapshotId))!;
  expect(snap.state).toBe('ready');
  fs.mkdirSync(dest, { recursive: true });
  if (!isManifestKey(snap.object_key)) {
    const file = path.join(stack.dir, `${snapshotId}.tar.zst`);
    await pipeline(await stack.store.get(snap.object_key), fs.createWriteStream(file));
    expect(sha256File(file)).toBe(snap.sha256);
    gnuExtract(file, dest, 'zstd');
    return;
  }
  const { pool, packs } = chunkContext(stack.deps);
  const meter = createMeter();
  const body = (await stack.store.get(snap.object_key)).pipe(meter.stream);
  await restoreTree({
    db: stack.db,
    packs,
    pool,
    accountId: snap.account_id,
    chunkKey: await accountChunkKey(stack.db, snap.account_id),
    manifest: body,
    dest,
    signal: new AbortController().signal,
  });
  expect(meter.digest()).toBe(snap.sha256);
}

/** Bytes of the regular files under root, each hardlinked file once: a chunked snapshot's size. */
export function fileBytes(root: string): number {
  let total = 0;
  const seen = new Set<number>();
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const st = fs.lstatSync(p);
        if (st.nlink > 1 && seen.has(st.ino)) continue;
        seen.add(st.ino);
        total += st.size;
      }
    }
  };
  walk(root);
  return total;
}
