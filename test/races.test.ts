import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { describeTree } from './support/tree.js';
import { getSnapshot } from '../src/catalog/snapshots.js';
import { expectConsistent } from './support/verify.js';
import { SA } from '../src/workflows/search-attributes.js';
import { faultRegistry } from './support/faults.js';
import { MiB } from './support/wait.js';

type Api = ReturnType<typeof apiClient>;

const faults = faultRegistry();

/**
 * Operations of different sandboxes run on different workflows, so nothing orders a read of a
 * snapshot (restore into, or fork to, another sandbox) against what its own sandbox does meanwhile.
 */
describe.each(['s3', 'fs'] as const)('cross-sandbox races on the %s store', (storeKind) => {
  let stack: TestStack;
  let api: Api;
  let account: string;
  let key: string;

  /** The checker, as the oracle, once every operation's workflow has closed. */
  const consistent = (opIds: string[]) => expectConsistent(stack, [account], opIds);

  beforeAll(async () => {
    stack = await startStack({
      store: storeKind,
      catalog: 'postgres',
      api: true,
      faultHook: faults.hook,
    });
    const a = await stack.newAccount();
    account = a.id;
    key = a.apiKey;
    api = apiClient(stack.apiUrl!, a.apiKey);
  });
  afterAll(async () => stack?.close());

  /** A sandbox with a snapshot of a tree worth reading for a while. */
  async function snapshotted() {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const root = stack.runtime.rootDir(id);
    fs.writeFileSync(path.join(root, 'data.bin'), randomBytes(4 * MiB));
    fs.writeFileSync(path.join(root, 'note.txt'), 'hello\n');
    const snap = await api.snapshot(id, 'base');
    expect(snap.op.status).toBe('succeeded');
    return { id, snapshotId: snap.snapshotId, tree: describeTree(root) };
  }

  /** Holds the first read of the snapshot until released; resolves once the read has begun. */
  async function holdRead(snapshotId: string) {
    const read = faults.hold(snapshotId, 'restore:extracting');
    return {
      started: read.wasReached,
      release: () => {
        faults.disarm(snapshotId);
        read.open();
      },
    };
  }

  it('a fork reading a snapshot while its sandbox is deleted: the fork succeeds byte for byte and the snapshot stays', async () => {
    const { id, snapshotId, tree } = await snapshotted();
    const hold = await holdRead(snapshotId);
    const f = await api.call('POST', '/v1/sandboxes', { from_snapshot: snapshotId });
    expect(f.status).toBe(202);
    await hold.started;

    const del = await api.call('DELETE', `/v1/sandboxes/${id}`);
    expect(del.status).toBe(202);
    expect((await api.waitOp(del.body.operation.id)).status).toBe('succeeded');
    hold.release();

    expect((await api.waitOp(f.body.operation.id)).status).toBe('succeeded');
    expect(describeTree(stack.runtime.rootDir(f.body.sandbox.id))).toEqual(tree);
    // A fork is found in Temporal by the sandbox it makes and the snapshot it reads.
    const attrs = (await stack.client.workflow.getHandle(f.body.operation.id).describe()).typedSearchAttributes;
    expect(attrs.get(SA.sandboxId)).toBe(f.body.sandbox.id);
    expect(attrs.get(SA.snapshotId)).toBe(snapshotId);
    expect(attrs.get(SA.operationType)).toBe('fork');
    expect((await getSnapshot(stack.db, snapshotId))!.state).toBe('ready');
    // Still restorable after its sandbox is gone.
    const again = await api.call('POST', '/v1/sandboxes', { from_snapshot: snapshotId });
    expect((await api.waitOp(again.body.operation.id)).status).toBe('succeeded');
    expect(describeTree(stack.runtime.rootDir(again.body.sandbox.id))).toEqual(tree);
    await consistent([f.body.operation.id, del.body.operation.id, again.body.operation.id]);
  });

  it('deleting a snapshot that a restore into another sandbox is reading is refused; the restore completes', async () => {
    const { snapshotId, tree } = await snapshotted();
    const target = await api.createSandbox({ idle_timeout_s: 0 });
    const hold = await holdRead(snapshotId);
    const r = await api.call('POST', `/v1/snapshots/${snapshotId}/restore`, { to: target });
    expect(r.status).toBe(202);
    await hold.started;

    const del = await api.call('DELETE', `/v1/snapshots/${snapshotId}`);
    if (del.status === 202) {
      // Accepted, then refused by the workflow under the snapshot's row lock.
      const op = await api.waitOp(del.body.operation.id);
      expect(op.status).toBe('failed');
      expect(op.error.code).toBe('snapshot_in_use');
    } else {
      expect(del.status).toBe(409);
      expect(del.body.error.code).toBe('snapshot_in_use');
    }
    hold.release();

    expect((await api.waitOp(r.body.operation.id)).status).toBe('succeeded');
    expect(describeTree(stack.runtime.rootDir(target))).toEqual(tree);
    const snap = (await getSnapshot(stack.db, snapshotId))!;
    expect(snap.state).toBe('ready');
    expect((await stack.store.head(snap.object_key))?.size).toBe(Number(snap.manifest_bytes));
    await consistent([r.body.operation.id, ...(del.status === 202 ? [del.body.operation.id] : [])]);
  });

  it('a file upload that a restore overtakes is refused with 409 conflict, never a 500; a paused sandbox takes no writes', async () => {
    const { id, snapshotId, tree } = await snapshotted();
    let finish!: () => void;
    const restored = new Promise<void>((r) => (finish = r));
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(new TextEncoder().encode('first half, '));
        await restored;
        controller.enqueue(new TextEncoder().encode('second half'));
        controller.close();
      },
    });
    const put = fetch(`${stack.apiUrl}/v1/sandboxes/${id}/files/late.txt`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${key}` },
      body,
      duplex: 'half',
    } as RequestInit);
    // The upload's first bytes are on disk in the current root before the restore swaps it out.
    await new Promise((r) => setTimeout(r, 300));
    const r = await api.call('POST', `/v1/snapshots/${snapshotId}/restore`, {});
    expect((await api.waitOp(r.body.operation.id)).status).toBe('succeeded');
    finish();
    const res = await put;
    expect(res.status).toBe(409);
    expect((await res.json()).error.code).toBe('conflict');
    expect(describeTree(stack.runtime.rootDir(id))).toEqual(tree);

    const p = await api.call('POST', `/v1/sandboxes/${id}/pause`);
    expect((await api.waitOp(p.body.operation.id)).status).toBe('succeeded');
    const refused = await api.call('PUT', `/v1/sandboxes/${id}/files/while-paused.txt`, 'x');
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('invalid_state');
    expect((await api.call('DELETE', `/v1/sandboxes/${id}/files/note.txt`)).status).toBe(409);
    expect(fs.existsSync(path.join(stack.runtime.rootDir(id), 'while-paused.txt'))).toBe(false);
    await consistent([r.body.operation.id, p.body.operation.id]);
  });
});
