import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { describeFullTree, populateFullTree } from './support/full-tree.js';
import { insertSandbox } from '../src/catalog/sandboxes.js';
import { reserveSnapshot } from '../src/catalog/snapshots.js';
import { accountChunkKey } from '../src/catalog/chunk-store.js';
import { layout } from '../src/storage/layout.js';
import { fetchParentManifest, writeSnapshot, type WriteSnapshotResult } from '../src/chunks/snapshot-writer.js';
import { restoreTree } from '../src/chunks/tree-restorer.js';
import { PackCache, packFiles, type PackFiles } from '../src/chunks/pack-files.js';
import { chunkPool } from '../src/chunks/worker-pool.js';
import { newSandboxId, newSnapshotId } from '../src/shared/ids.js';
import { CagedError } from '../src/shared/errors.js';
import { MiB } from './support/wait.js';
import { createMeter } from '../src/activities/stream-meter.js';

/**
 * The chunk store's data path on each blob store: a tree recorded as a chunked snapshot and rebuilt
 * from it is the same tree (every kind of entry, times, holes), a second snapshot reads only what
 * changed and stores only new chunks, and a damaged chunk is refused, not restored.
 */
describe.each(['fs', 's3'] as const)('chunked snapshots on the %s store', (kind) => {
  let stack: TestStack;
  let packs: PackFiles;
  let accountId: string;
  let sandboxId: string;
  let work: string;
  const pool = chunkPool();

  beforeAll(async () => {
    stack = await startStack({ store: kind, workers: false });
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'caged-chunks-'));
    packs = packFiles(stack.store, new PackCache(path.join(work, 'cache'), 256 * MiB));
    fs.mkdirSync(path.join(work, 'cache'));
    accountId = (await stack.newAccount()).id;
    sandboxId = newSandboxId();
    await insertSandbox(stack.db, { id: sandboxId, accountId, template: 'base', cpu: 1, memoryMb: 1024, hostId: 'testhost', idleTimeoutSeconds: 300, state: 'running' });
  });
  afterAll(async () => {
    await stack?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  async function snapshot(tree: string, parentSnapshot?: { snapshotId: string; key: string; sha256: string }, plainOnly = false): Promise<WriteSnapshotResult & { snapshotId: string; key: string }> {
    const snapshotId = newSnapshotId();
    await reserveSnapshot(stack.db, { id: snapshotId, accountId, sandboxId, name: snapshotId, kind: 'manual' }, stack.config.limits);
    const key = layout.manifest(sandboxId, snapshotId);
    const spoolDir = fs.mkdtempSync(path.join(work, 'spool-'));
    const parent = parentSnapshot && (await fetchParentManifest(stack.store, parentSnapshot, path.join(spoolDir, 'parent'), new AbortController().signal)).parent;
    if (parentSnapshot) expect(parent?.snapshotId).toBe(parentSnapshot.snapshotId);
    const r = await writeSnapshot({
      db: stack.db,
      store: stack.store,
      packs,
      pool,
      accountId,
      snapshotId,
      chunkKey: await accountChunkKey(stack.db, accountId),
      tree,
      manifestKey: key,
      parent,
      spoolDir,
      plainOnly,
      signal: new AbortController().signal,
    });
    return { ...r, snapshotId, key };
  }

  async function restore(key: string, sha256: string): Promise<string> {
    const dest = fs.mkdtempSync(path.join(work, 'restored-'));
    const chunkKey = await accountChunkKey(stack.db, accountId);
    const meter = createMeter();
    const body = (await stack.store.get(key)).pipe(meter.stream);
    await restoreTree({ db: stack.db, packs, pool, accountId, chunkKey, manifest: body, dest, signal: new AbortController().signal });
    expect(meter.digest()).toBe(sha256);
    return dest;
  }

  it('rebuilds the same tree: kinds, modes, times, hardlinks, holes, non-UTF-8 names', async () => {
    const tree = fs.mkdtempSync(path.join(work, 'tree-'));
    populateFullTree(tree);
    fs.writeFileSync(path.join(tree, 'proj/before-1970.txt'), '');
    fs.utimesSync(path.join(tree, 'proj/before-1970.txt'), '-1500.25', '-1500.25');
    const first = await snapshot(tree);
    const logical = 12 + 11 + (6 * MiB + 12345) * 2 + 24 * MiB + 13 + Array.from({ length: 40 }, (_, i) => `file ${i}\n`.length * i * 50).reduce((a, b) => a + b, 0);
    expect(first.logicalBytes).toBe(logical);
    // The copy of large.bin and the sparse file's holes are not stored: what is stored is about one
    // large.bin plus 300 kB (random bytes do not compress), never the 36 MiB of the tree.
    expect(first.storedBytes).toBeGreaterThan(6 * MiB);
    expect(first.storedBytes).toBeLessThan(6 * MiB + 800_000);
    const restored = await restore(first.key, first.sha256);
    expect(describeFullTree(restored)).toEqual(describeFullTree(tree));
    expect(describeFullTree(restored).find((e) => e.path === 'proj/sparse.img')?.sparse).toBe(true);
    // A time before 1970 comes back as itself (Node's utimes takes a negative number for "now").
    expect(fs.lstatSync(path.join(restored, 'proj/before-1970.txt'), { bigint: true }).mtimeNs).toBe(-1_500_250_000_000n);

    // Times below the microsecond: the manifest keeps nanoseconds, the restore sets the nearest
    // time utimes can express (a double: within 120 ns today), never a truncated microsecond.
    const mtimes = (root: string) => ['proj/src/main.py', 'proj'].map((p) => fs.lstatSync(path.join(root, p), { bigint: true }).mtimeNs);
    const [fileNs, dirNs] = mtimes(tree);
    expect([fileNs! % 1000n, dirNs! % 1000n]).not.toEqual([0n, 0n]);
    const [gotFile, gotDir] = mtimes(restored);
    for (const [got, want] of [[gotFile!, fileNs!], [gotDir!, dirNs!]] as const) expect(got > want ? got - want : want - got).toBeLessThanOrEqual(120n);
  });

  it("a time a nanosecond before a whole second stays in its second (its nearest double is the next one)", async () => {
    const tree = fs.mkdtempSync(path.join(work, 'tree-'));
    fs.writeFileSync(path.join(tree, 'last-ns-of-1999.txt'), '');
    execFileSync('touch', ['-h', '-d', '@946684799.999999999', path.join(tree, 'last-ns-of-1999.txt')]);
    const s = await snapshot(tree);
    const restored = await restore(s.key, s.sha256);
    const ns = fs.lstatSync(path.join(restored, 'last-ns-of-1999.txt'), { bigint: true }).mtimeNs;
    expect(ns / 1_000_000_000n).toBe(946_684_799n);
    expect(946_684_799_999_999_999n - ns).toBeLessThanOrEqual(1000n);
  });

  it('for an import, refuses a FIFO or a setuid file in the extracted tree (whatever the extractor made of the archive)', async () => {
    for (const [make, what] of [
      [(t: string) => execFileSync('mkfifo', [path.join(t, 'pipe')]), 'a FIFO at "pipe"'],
      [(t: string) => (fs.writeFileSync(path.join(t, 'suid'), 'x'), fs.chmodSync(path.join(t, 'suid'), 0o4755)), 'a setuid/setgid entry at "suid"'],
    ] as const) {
      const tree = fs.mkdtempSync(path.join(work, 'tree-'));
      fs.writeFileSync(path.join(tree, 'a.txt'), randomBytes(1000));
      make(tree);
      const err = await snapshot(tree, undefined, true).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CagedError);
      expect(err).toMatchObject({ code: 'invalid_archive', message: `the extracted archive holds ${what}, which import does not allow` });
    }
  });

  it('reads only changed files the next time and stores only their new chunks', async () => {
    const tree = fs.mkdtempSync(path.join(work, 'tree-'));
    populateFullTree(tree);
    // A file changed within a second before a walk may change again unseen with coarse timestamps,
    // so the first snapshot re-reads it next time; this test wants every file past that window.
    await new Promise((r) => setTimeout(r, 1100));
    const first = await snapshot(tree);
    fs.writeFileSync(path.join(tree, 'proj/src/main.py'), 'print("changed")\n');
    const fd = fs.openSync(path.join(tree, 'proj/large.bin'), 'r+');
    fs.writeSync(fd, randomBytes(MiB), 0, MiB, 3 * MiB);
    fs.closeSync(fd);
    const second = await snapshot(tree, { snapshotId: first.snapshotId, key: first.key, sha256: first.sha256 });
    expect(second.filesRead).toBe(2);
    expect(second.filesReused).toBe(first.files - 2);
    // The overwritten MiB of large.bin changes the chunks that touch it, not the whole file: less
    // is stored than the file's 6 MiB of random bytes (typically 2-3 MiB; a chunk may reach 4 MiB).
    expect(second.storedBytes).toBeLessThan(6 * MiB);
    expect(second.bytesRead).toBe(6 * MiB + 12345 + 'print("changed")\n'.length);
    const restored = await restore(second.key, second.sha256);
    expect(describeFullTree(restored)).toEqual(describeFullTree(tree));
  });

  it('a tree larger than the writer\'s window of pending entries, changed at its start, is recorded and rebuilt', async () => {
    const tree = fs.mkdtempSync(path.join(work, 'tree-'));
    // More entries than MAX_PENDING_ENTRIES (8192), so the walk waits for the oldest one to be stored.
    for (let d = 0; d < 10; d++) {
      fs.mkdirSync(path.join(tree, `d${d}`));
      for (let i = 0; i < 900; i++) fs.writeFileSync(path.join(tree, `d${d}`, `f${i}`), `${d}/${i}\n`);
    }
    await new Promise((r) => setTimeout(r, 1100));
    const first = await snapshot(tree);
    fs.writeFileSync(path.join(tree, 'd0', 'f0'), 'changed\n');
    const second = await snapshot(tree, { snapshotId: first.snapshotId, key: first.key, sha256: first.sha256 });
    expect(second.entries).toBe(9010);
    expect(second.filesRead).toBe(1);
    expect(second.filesReused).toBe(8999);
    const restored = await restore(second.key, second.sha256);
    expect(describeFullTree(restored)).toEqual(describeFullTree(tree));
  });

  it("an unchanged file whose parent's chunks are no longer stored is read again, in place, across a large tree", async () => {
    const tree = fs.mkdtempSync(path.join(work, 'tree-'));
    for (let d = 0; d < 10; d++) {
      fs.mkdirSync(path.join(tree, `d${d}`));
      for (let i = 0; i < 900; i++) fs.writeFileSync(path.join(tree, `d${d}`, `f${i}`), `${d}/${i} ${'x'.repeat(d * 10)}\n`);
    }
    await new Promise((r) => setTimeout(r, 1100));
    const first = await snapshot(tree);
    // As the collector leaves a pack it condemned: its chunks are no longer found for reuse. One
    // pack of the snapshot's (each worker lane writes its own), so reused and re-read files mix.
    const packsOfFirst = await stack.db.selectFrom('packs').select('id').where('writer_snapshot_id', '=', first.snapshotId).orderBy('id').execute();
    const condemned = packsOfFirst.slice(0, Math.max(1, packsOfFirst.length - 1));
    await stack.db.updateTable('packs').set({ state: 'condemned', condemned_at: new Date() }).where('id', 'in', condemned.map((c) => c.id)).execute();
    // Every file is one chunk of its own: the files to read again are the condemned packs' chunks.
    const gone = Number((await stack.db.selectFrom('chunks').select((eb) => eb.fn.countAll<string>().as('n')).where('pack_id', 'in', condemned.map((c) => c.id)).executeTakeFirstOrThrow()).n);
    expect(gone).toBeGreaterThan(0);
    const second = await snapshot(tree, { snapshotId: first.snapshotId, key: first.key, sha256: first.sha256 });
    expect(second.filesRead).toBe(gone);
    expect(second.filesReused).toBe(9000 - gone);
    expect(second.storedBytes).toBeGreaterThan(0);
    const restored = await restore(second.key, second.sha256);
    expect(describeFullTree(restored)).toEqual(describeFullTree(tree));
    await stack.db.updateTable('packs').set({ state: 'live', condemned_at: null }).where('id', 'in', condemned.map((c) => c.id)).execute();
  });

  it('refuses a chunk whose bytes do not match its id; a damaged local copy of a remote pack is fetched again', async () => {
    const tree = fs.mkdtempSync(path.join(work, 'tree-'));
    fs.writeFileSync(path.join(tree, 'only.txt'), 'unique content of the damaged snapshot\n');
    const s = await snapshot(tree);
    const pack = await stack.db.selectFrom('packs').select('object_key').where('writer_snapshot_id', '=', s.snapshotId).executeTakeFirstOrThrow();
    const damage = (file: string) => {
      // One byte inside the first frame: it no longer decompresses, or no longer matches its id.
      const bytes = fs.readFileSync(file);
      bytes[20]! ^= 0xff;
      fs.rmSync(file);
      fs.writeFileSync(file, bytes);
      return bytes;
    };
    const local = await packs.open(pack.object_key);
    const damaged = damage(local.file);
    local.release();
    if (kind === 's3') {
      // Only this host's copy is damaged: the restore drops it and reads the store's.
      const healed = await restore(s.key, s.sha256);
      expect(fs.readFileSync(path.join(healed, 'only.txt'), 'utf8')).toBe('unique content of the damaged snapshot\n');
      await stack.store.put(pack.object_key, Readable.from([damaged]));
      await packs.forget(pack.object_key);
    }
    const err = await restore(s.key, s.sha256).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CagedError);
    expect((err as CagedError).code).toBe('checksum_mismatch');
  });
});
