import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { extractSnapshot } from './support/snapshot-tree.js';
import { describeTree, type TreeEntry } from './support/tree.js';
import { accountChunkKey } from '../src/catalog/chunk-store.js';
import { chunkId } from '../src/chunks/codec.mjs';
import { gcPass } from './support/gc.js';
import type { GcResult } from '../src/workflows/gc.js';
import { MiB } from './support/wait.js';

const SANDBOXES = 5;
const ROUNDS = 4;
/** Under the codec's small-file bound: stored as one chunk whose id the test can compute. */
const UNIQUE_BYTES = 600 * 1024;

/**
 * The collector racing the operations it must never hurt: passes run back to back, with no grace
 * (a condemned pack goes as soon as no operation older than its condemnation runs), while five
 * sandboxes each snapshot and fork at once (ten operations side by side), restore in place and
 * delete their older snapshots. The sandboxes share a file (one chunk for all) and each snapshot
 * holds a file of its own. Every ready snapshot must restore byte for byte, every fork and restore
 * must give the tree of its snapshot, and once the operations are over, one more pass must have
 * freed the bytes only the deleted snapshots held.
 */
describe.each(['fs', 's3'] as const)('garbage collection during concurrent operations on the %s store', (kind) => {
  let stack: TestStack;
  let api: ReturnType<typeof apiClient>;
  let accountId: string;

  beforeAll(async () => {
    stack = await startStack({ store: kind, api: true, config: { gc: { intervalSeconds: 3600, graceSeconds: 0 } } });
    const acct = await stack.newAccount();
    accountId = acct.id;
    api = apiClient(stack.apiUrl!, acct.apiKey);
  });
  afterAll(async () => stack?.close());

  const collect = () => gcPass(stack, accountId);

  const succeeded = async (r: { status: number; body: any }, what: string) => {
    expect(r.status, `${what}: ${JSON.stringify(r.body)}`).toBeLessThan(300);
    const op = await api.waitOp(r.body.operation.id, 180_000);
    expect(op.status, `${what}: ${JSON.stringify(op.error)}`).toBe('succeeded');
    return r.body;
  };

  it('loses nothing a ready snapshot holds and frees what only deleted snapshots held', { timeout: 600_000 }, async () => {
    const shared = randomBytes(3 * MiB);
    const expected = new Map<string, TreeEntry[]>();
    const uniqueOf = new Map<string, Buffer>();
    const deleted: string[] = [];

    /** A new state of the sandbox: a few small files rewritten and a file only the next snapshot will hold. */
    const mutate = (root: string, round: number) => {
      fs.writeFileSync(path.join(root, 'shared.bin'), shared);
      fs.mkdirSync(path.join(root, 'work'), { recursive: true });
      for (let f = 0; f < 12; f++) if (round === 0 || f % 4 === round % 4) fs.writeFileSync(path.join(root, 'work', `f${f}.txt`), randomBytes(8000 + f));
      for (const name of fs.readdirSync(root)) if (name.startsWith('unique-')) fs.rmSync(path.join(root, name));
      const unique = randomBytes(UNIQUE_BYTES);
      fs.writeFileSync(path.join(root, `unique-${round}.bin`), unique);
      return unique;
    };

    const ids: string[] = [];
    for (let s = 0; s < SANDBOXES; s++) ids.push(await api.createSandbox());

    let stop = false;
    const during: GcResult[] = [];
    const collector = (async () => {
      while (!stop) during.push(await collect());
    })();

    try {
      await Promise.all(
        ids.map(async (id) => {
          const root = stack.runtime.rootDir(id);
          const mine: string[] = [];
          for (let round = 0; round < ROUNDS; round++) {
            const unique = mutate(root, round);
            const tree = describeTree(root);
            const prev = mine.at(-1);
            // A snapshot and a fork of the one before it at once; the oldest but one is deleted meanwhile.
            const [snap, fork] = await Promise.all([
              api.snapshot(id, `r${round}`),
              prev ? succeeded(await api.call('POST', '/v1/sandboxes', { from_snapshot: prev }), `fork of ${prev}`) : undefined,
              mine.length >= 2 ? succeeded(await api.call('DELETE', `/v1/snapshots/${mine[mine.length - 2]}`), 'delete').then(() => deleted.push(mine[mine.length - 2]!)) : undefined,
            ]);
            expect(snap.op.status, JSON.stringify(snap.op.error)).toBe('succeeded');
            expected.set(snap.snapshotId, tree);
            uniqueOf.set(snap.snapshotId, unique);
            if (fork) expect(describeTree(stack.runtime.rootDir(fork.sandbox.id))).toEqual(expected.get(prev!));
            mine.push(snap.snapshotId);
            if (round === 1) {
              // Back to the snapshot before, in place: the next rounds go on from its tree.
              await succeeded(await api.call('POST', `/v1/snapshots/${mine[0]}/restore`, {}), 'restore');
              expect(describeTree(root)).toEqual(expected.get(mine[0]!));
            }
          }
        }),
      );
    } finally {
      stop = true;
      await collector;
    }

    // The collector acted while the operations ran: it rewrote packs holding deleted snapshots' chunks and deleted packs.
    const total = (k: keyof GcResult) => during.reduce((n, r) => n + r[k], 0);
    expect(during.length).toBeGreaterThan(1);
    expect(total('deleted')).toBeGreaterThan(0);
    expect(total('repacked')).toBeGreaterThan(0);
    expect(total('repackFailures')).toBe(0);
    expect(deleted).toHaveLength(SANDBOXES * (ROUNDS - 2));

    // Every snapshot still ready restores to its tree, byte for byte.
    const ready = await stack.db.selectFrom('snapshots').select('id').where('account_id', '=', accountId).where('state', '=', 'ready').execute();
    expect(new Set(ready.map((r) => r.id))).toEqual(new Set([...expected.keys()].filter((k) => !deleted.includes(k))));
    for (const { id } of ready) {
      const out = path.join(stack.dir, `race-${id}`);
      await extractSnapshot(stack, id, out);
      expect(describeTree(out), id).toEqual(expected.get(id));
    }

    // With nothing running, one pass frees what only the deleted snapshots held (grace 0): their own files' chunks leave the index.
    const last = await collect();
    expect(last.repackFailures).toBe(0);
    const key = await accountChunkKey(stack.db, accountId);
    const indexed = async (bytes: Buffer) =>
      (await stack.db.selectFrom('chunks').select('id').where('account_id', '=', accountId).where('hash', '=', chunkId(key, bytes)).execute()).length;
    for (const id of deleted) expect(await indexed(uniqueOf.get(id)!), `unique chunk of deleted ${id}`).toBe(0);
    for (const { id } of ready) expect(await indexed(uniqueOf.get(id)!), `unique chunk of ready ${id}`).toBe(1);
    // No pack is left that nothing references, and every live pack's object is whole.
    const packs = await stack.db.selectFrom('packs').select(['id', 'state', 'object_key', 'size_bytes']).where('account_id', '=', accountId).where('state', '!=', 'deleted').execute();
    expect(packs.filter((p) => p.state !== 'live')).toEqual([]);
    for (const p of packs) expect(await stack.store.head(p.object_key), p.id).toMatchObject({ size: Number(p.size_bytes) });
  });
});
