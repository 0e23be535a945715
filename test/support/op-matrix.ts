import { verifyTestStack } from './verify.js';
/**
 * What the fault matrices (worker-kill-matrix, cancel-matrix) share: how to set up and start each
 * operation type through the API, how to check what it produced (or that it was rolled back), and
 * the one oracle that judges the whole stack after a case.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { startStack, type TestStack } from './stack.js';
import { apiClient } from './http.js';
import { killAllChildren } from './processes.js';
import { describeTree, gnuExtract, populateTree, sha256File, type TreeEntry } from './tree.js';
import { extractSnapshot } from './snapshot-tree.js';
import { openUploadKeys } from './s3.js';
import { classifyKey, layout } from '../../src/storage/layout.js';
import { getSnapshot } from '../../src/catalog/snapshots.js';
import { MiB } from './wait.js';

export interface MatrixEnv {
  stack: TestStack;
  api: ReturnType<typeof apiClient>;
  accountId: string;
}

export type OpType = 'create_snapshot' | 'pause' | 'restore' | 'fork' | 'export' | 'import' | 'delete_snapshot';

export const WORKFLOW_TYPE: Record<OpType, string> = {
  create_snapshot: 'createSnapshotWorkflow',
  pause: 'pauseWorkflow',
  restore: 'restoreWorkflow',
  fork: 'forkWorkflow',
  export: 'exportWorkflow',
  import: 'importWorkflow',
  delete_snapshot: 'deleteSnapshotWorkflow',
};

/**
 * Registers the hooks of a matrix file: one stack (S3 store, PostgreSQL catalog, API) with no
 * workers of its own, since each case starts the worker process it holds, and one account. Worker
 * processes are killed after each case. The returned object is filled in by beforeAll.
 */
export function matrixStack(accountName: string): { stack: TestStack; api: ReturnType<typeof apiClient>; m: ReturnType<typeof opMatrix> } {
  const env = {} as ReturnType<typeof matrixStack>;
  beforeAll(async () => {
    env.stack = await startStack({ store: 's3', catalog: 'postgres', api: true, workers: false });
    const acct = await env.stack.newAccount(accountName);
    env.api = apiClient(env.stack.apiUrl!, acct.apiKey);
    env.m = opMatrix({ stack: env.stack, api: env.api, accountId: acct.id });
  });
  afterEach(async () => killAllChildren());
  afterAll(async () => {
    await killAllChildren();
    await env.stack?.close();
  });
  return env;
}

/** The helpers over one stack and account. */
export function opMatrix({ stack, api, accountId }: MatrixEnv) {
  /** A sandbox with a tree worth snapshotting and a process that runs (and writes nothing). */
  async function busySandbox(): Promise<{ id: string; pid: number; tree: TreeEntry[] }> {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const root = stack.runtime.rootDir(id);
    populateTree(root);
    fs.writeFileSync(path.join(root, 'random.bin'), randomBytes(6 * MiB));
    const { pid } = await api.exec(id, ['sh', '-c', 'while true; do sleep 0.1; done'], true);
    return { id, pid, tree: describeTree(root) };
  }

  async function snapshotOf(id: string, name: string): Promise<string> {
    const { op, snapshotId } = await api.snapshot(id, name);
    if (op.status !== 'succeeded') throw new Error(`setup snapshot failed: ${JSON.stringify(op)}`);
    return snapshotId;
  }

  /** The snapshot's tree, rebuilt from the store after checking its sha256 against the catalog. */
  async function snapshotTree(snapshotId: string): Promise<TreeEntry[]> {
    const out = path.join(stack.dir, `x-${snapshotId}`);
    await extractSnapshot(stack, snapshotId, out);
    return describeTree(out);
  }

  /**
   * ORACLE — the one place where the state of the stack is judged after a case. Swap in the
   * consistency checker (`verifyStack`) here when it lands. Today, for the case's sandboxes (so one
   * broken case does not fail every later one): no open multipart upload; every object in the store
   * belongs to a live snapshot (its archive, or its export and checksum) and every live snapshot's
   * archive is there; no snapshot is left pending or deleting and no operation running.
   */
  async function checkStack(sandboxIds: string[]): Promise<void> {
    const snaps = await stack.db.selectFrom('snapshots').selectAll().where('account_id', '=', accountId).where('sandbox_id', 'in', sandboxIds).execute();
    const ids = new Set(snaps.map((s) => s.id));
    const ours = (key: string) => sandboxIds.some((sb) => key.startsWith(`snapshots/${sb}/`)) || ids.has(classifyKey(key)?.snapshotId ?? '');
    expect((await openUploadKeys(stack)).filter(ours)).toEqual([]);
    expect(snaps.filter((s) => s.state === 'pending' || s.state === 'deleting').map((s) => `${s.id} ${s.state}`)).toEqual([]);
    const live = snaps.filter((s) => s.state === 'ready');
    const allowed = new Set<string>();
    for (const s of live) for (const key of [s.object_key, ...layout.snapshotExtras(s.sandbox_id, s.id)]) allowed.add(key);
    const orphans: string[] = [];
    for await (const o of stack.store.list('')) if (ours(o.key) && !allowed.has(o.key)) orphans.push(o.key);
    expect(orphans).toEqual([]);
    for (const s of live) expect(await stack.store.head(s.object_key), `archive of ready snapshot ${s.id}`).toBeTruthy();
    const running = await stack.db.selectFrom('operations').select(['id', 'type']).where('account_id', '=', accountId).where('sandbox_id', 'in', sandboxIds).where('status', '=', 'running').execute();
    expect(running).toEqual([]);
    // And the consistency checker (deep: every ready snapshot's sha256) finds nothing either.
    expect(await verifyTestStack(stack, [accountId], { deep: true })).toEqual([]);
  }

  /** Swap directories that must be gone once an operation's workflow has closed. */
  function leftovers(sandboxId: string): string[] {
    const dir = stack.runtime.sandboxDir(sandboxId);
    return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => /^root\.(staging|previous|discard|creating)-/.test(n)) : [];
  }

  /** A .tar.gz of a fresh tree, and that tree. */
  function importArchive(): { body: Buffer; tree: TreeEntry[] } {
    const src = fs.mkdtempSync(path.join(stack.dir, 'import-src-'));
    populateTree(src);
    fs.writeFileSync(path.join(src, 'imported.bin'), randomBytes(2 * MiB));
    const file = `${src}.tar.gz`;
    execFileSync('tar', ['-czf', file, '-C', src, '.']);
    return { body: fs.readFileSync(file), tree: describeTree(src) };
  }

  interface Started {
    opId: string;
    /** Checks what the operation produced once it has succeeded. */
    verify(): Promise<void>;
    /** Checks that a failed or cancelled operation left everything as it was before it. */
    rolledBack(): Promise<void>;
    /** The sandbox whose processes must (not) be stopped at the end, and whether it should be paused. */
    sandbox?: { id: string; pid: number; paused: boolean };
    /** Every sandbox the case made (the oracle looks at these). */
    sandboxIds: string[];
  }

  /** Sets up what the operation needs (with the held worker, whose hold is for another workflow type) and starts it. */
  async function startOperation(op: OpType): Promise<Started> {
    const sb = await busySandbox();
    const root = stack.runtime.rootDir(sb.id);
    const running = { id: sb.id, pid: sb.pid, paused: false };
    switch (op) {
      case 'create_snapshot': {
        const r = await api.call('POST', `/v1/sandboxes/${sb.id}/snapshots`, { name: 'killed' });
        expect(r.status).toBe(202);
        return {
          opId: r.body.operation.id,
          sandboxIds: [sb.id],
          sandbox: running,
          verify: async () => expect(await snapshotTree(r.body.snapshot.id)).toEqual(sb.tree),
          rolledBack: async () => {
            expect((await getSnapshot(stack.db, r.body.snapshot.id))!.state).toBe('failed');
            expect(describeTree(root)).toEqual(sb.tree);
          },
        };
      }
      case 'pause': {
        const r = await api.call('POST', `/v1/sandboxes/${sb.id}/pause`);
        expect(r.status).toBe(202);
        return {
          opId: r.body.operation.id,
          sandboxIds: [sb.id],
          sandbox: { ...running, paused: true },
          verify: async () => {
            const result = (await api.call('GET', `/v1/operations/${r.body.operation.id}`)).body.result;
            expect(result.snapshot_id, JSON.stringify(result)).toBeTruthy();
            expect(await snapshotTree(result.snapshot_id)).toEqual(sb.tree);
            expect((await api.call('GET', `/v1/sandboxes/${sb.id}`)).body.state).toBe('paused');
          },
          rolledBack: async () => {
            expect((await api.call('GET', `/v1/sandboxes/${sb.id}`)).body.state).toBe('running');
            expect(describeTree(root)).toEqual(sb.tree);
          },
        };
      }
      case 'restore': {
        const snap = await snapshotOf(sb.id, 'base');
        fs.writeFileSync(path.join(root, 'proj/src/main.py'), 'changed\n');
        fs.rmSync(path.join(root, 'random.bin'));
        fs.writeFileSync(path.join(root, 'new-file'), 'new');
        const r = await api.call('POST', `/v1/snapshots/${snap}/restore`, {});
        expect(r.status).toBe(202);
        const before = describeTree(root);
        return {
          opId: r.body.operation.id,
          sandboxIds: [sb.id],
          sandbox: running,
          verify: async () => expect(describeTree(root)).toEqual(sb.tree),
          rolledBack: async () => expect(describeTree(root)).toEqual(before),
        };
      }
      case 'fork': {
        const snap = await snapshotOf(sb.id, 'base');
        const r = await api.call('POST', '/v1/sandboxes', { from_snapshot: snap, idle_timeout_s: 0 });
        expect(r.status).toBe(202);
        const forkId = r.body.sandbox.id as string;
        return {
          opId: r.body.operation.id,
          sandboxIds: [sb.id, forkId],
          sandbox: running,
          verify: async () => {
            expect(describeTree(stack.runtime.rootDir(forkId))).toEqual(sb.tree);
            expect((await api.call('GET', `/v1/sandboxes/${forkId}`)).body.state).toBe('running');
            expect(leftovers(forkId)).toEqual([]);
          },
          rolledBack: async () => {
            const fork = await api.call('GET', `/v1/sandboxes/${forkId}`);
            // A deleted sandbox is gone from the API (404) or shown as deleted.
            expect(fork.status === 404 || fork.body.state === 'deleted', JSON.stringify(fork.body)).toBe(true);
            expect(fs.existsSync(stack.runtime.rootDir(forkId))).toBe(false);
          },
        };
      }
      case 'export': {
        const snap = await snapshotOf(sb.id, 'base');
        const r = await api.call('POST', `/v1/snapshots/${snap}/export`);
        expect(r.status).toBe(202);
        return {
          opId: r.body.operation.id,
          sandboxIds: [sb.id],
          sandbox: running,
          verify: async () => {
            const result = (await api.call('GET', `/v1/operations/${r.body.operation.id}`)).body.result;
            const res = await fetch(result.url);
            expect(res.status).toBe(200);
            const file = path.join(stack.dir, `${snap}.tar.gz`);
            // Read whole, not piped: a body held back by backpressure when the server closes trips
            // an uncatchable assertion in Node 24's undici (nodejs/undici#5360).
            fs.writeFileSync(file, Buffer.from(await res.arrayBuffer()));
            expect(sha256File(file)).toBe(result.sha256);
            const out = path.join(stack.dir, `export-${snap}`);
            gnuExtract(file, out, 'gzip');
            expect(describeTree(out)).toEqual(sb.tree);
          },
          rolledBack: async () => {
            expect(await stack.store.head(`exports/${snap}.tar.gz`)).toBeFalsy();
            expect((await getSnapshot(stack.db, snap))!.state).toBe('ready');
          },
        };
      }
      case 'import': {
        const archive = importArchive();
        const r = await api.call('POST', `/v1/sandboxes/${sb.id}/snapshots/import?name=imported`, archive.body, { 'content-type': 'application/gzip' });
        expect(r.status, JSON.stringify(r.body)).toBe(202);
        return {
          opId: r.body.operation.id,
          sandboxIds: [sb.id],
          sandbox: running,
          verify: async () => expect(await snapshotTree(r.body.snapshot.id)).toEqual(archive.tree),
          rolledBack: async () => expect((await getSnapshot(stack.db, r.body.snapshot.id))!.state).toBe('failed'),
        };
      }
      case 'delete_snapshot': {
        const snap = await snapshotOf(sb.id, 'doomed');
        const key = (await getSnapshot(stack.db, snap))!.object_key;
        const r = await api.call('DELETE', `/v1/snapshots/${snap}`);
        expect(r.status).toBe(202);
        return {
          opId: r.body.operation.id,
          sandboxIds: [sb.id],
          sandbox: running,
          verify: async () => {
            expect((await getSnapshot(stack.db, snap))!.state).toBe('deleted');
            expect(await stack.store.head(key)).toBeFalsy();
          },
          // Nothing to undo when the deletion never started; the snapshot is still whole and readable.
          rolledBack: async () => expect(await snapshotTree(snap)).toEqual(sb.tree),
        };
      }
    }
  }

  /** Whether the history shows a workflow task that a worker started and never finished (it died). */
  async function workflowTaskTimedOut(opId: string): Promise<boolean> {
    const events = (await stack.client.workflow.getHandle(opId).fetchHistory()).events ?? [];
    // TimeoutType START_TO_CLOSE = 1: a started task whose worker went away.
    return events.some((e) => Number(e.workflowTaskTimedOutEventAttributes?.timeoutType) === 1);
  }

  function pidGone(pid: number): boolean {
    try {
      process.kill(pid, 0);
      return false;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
  }

  return { busySandbox, snapshotOf, snapshotTree, checkStack, leftovers, startOperation, workflowTaskTimedOut, pidGone };
}
