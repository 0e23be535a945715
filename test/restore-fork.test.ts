import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/activity';
import { startStack, type TestStack } from './support/stack.js';
import { finalAttempt } from './support/history.js';
import { apiClient } from './support/http.js';
import { describeTree, populateTree } from './support/tree.js';
import { faultRegistry } from './support/faults.js';
import { MiB, sleep, waitFor } from './support/wait.js';
import { DATA_HEARTBEAT_TIMEOUT_MS } from '../src/workflows/activities.js';

const faults = faultRegistry();
let stack: TestStack;
let api: ReturnType<typeof apiClient>;
let accountA: string;

const injected = (point: string) => ApplicationFailure.create({ type: 'injected_fault', message: `injected fault: ${point}`, nonRetryable: true });

describe.each(['s3', 'fs'] as const)('on the %s store', (storeKind) => {
  beforeAll(async () => {
    stack = await startStack({
      store: storeKind,
      catalog: 'postgres',
      api: true,
      faultHook: faults.hook,
    });
    const acct = await stack.newAccount('restore-a');
    accountA = acct.id;
    api = apiClient(stack.apiUrl!, acct.apiKey);
  });
  afterAll(async () => stack?.close());

  const root = (id: string) => stack.runtime.rootDir(id);

  /** Swap directories the restore may leave beside the root: there must be none once it has ended. */
  /** Leftovers once the operation's workflow has closed: it deletes the replaced root after reporting success. */
  async function leftoversOnceClosed(opId: string, id: string): Promise<string[]> {
    await stack.client.workflow.getHandle(opId).result();
    return leftovers(id);
  }

  function leftovers(id: string): string[] {
    return fs.readdirSync(stack.runtime.sandboxDir(id)).filter((n) => /^root\.(staging|previous|discard|creating)-/.test(n));
  }

  /** Changes of every kind: content, mode, new files and dirs, deletions, a dir replaced by a file, a retargeted link. */
  function mutate(r: string): void {
    fs.writeFileSync(path.join(r, 'proj/src/main.py'), 'print("changed")\n');
    fs.chmodSync(path.join(r, 'proj/secret.txt'), 0o644);
    fs.rmSync(path.join(r, 'proj/src/deep/er/blob.bin'));
    fs.rmdirSync(path.join(r, 'empty-dir'));
    fs.rmdirSync(path.join(r, 'proj/empty-nested'));
    fs.writeFileSync(path.join(r, 'proj/empty-nested'), 'now a file');
    fs.mkdirSync(path.join(r, 'added/nested/dir'), { recursive: true });
    fs.writeFileSync(path.join(r, 'added/nested/file.txt'), 'new');
    fs.writeFileSync(path.join(r, 'added-top'), randomBytes(1000));
    fs.rmSync(path.join(r, 'link-to-main'));
    fs.symlinkSync('proj/secret.txt', path.join(r, 'link-to-main'));
  }

  /** A background writer outside the root: it proves the sandbox's processes run, without touching the tree. */
  async function startWriter(id: string): Promise<string> {
    const file = path.join(stack.dir, `counter-${id}`);
    await api.exec(id, ['sh', '-c', `i=0; while true; do i=$((i+1)); echo $i > '${file}'; sleep 0.05; done`], true);
    await waitFor(() => fs.existsSync(file));
    return file;
  }

  async function expectCounting(file: string): Promise<void> {
    const before = fs.readFileSync(file, 'utf8');
    await sleep(400);
    expect(fs.readFileSync(file, 'utf8')).not.toBe(before);
  }

  async function expectNotCounting(file: string): Promise<void> {
    const before = fs.readFileSync(file, 'utf8');
    await sleep(400);
    expect(fs.readFileSync(file, 'utf8')).toBe(before);
  }

  async function restore(snapshotId: string, body: Record<string, unknown> = {}) {
    const r = await api.call('POST', `/v1/snapshots/${snapshotId}/restore`, body);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.operation).toMatchObject({ type: 'restore', status: 'running', snapshot_id: snapshotId });
    return r.body.operation.id as string;
  }

  /** Random data does not compress: the snapshot is several MB, so a fault can land mid-extraction. */
  function populateBig(r: string): void {
    populateTree(r);
    fs.mkdirSync(path.join(r, 'big'));
    for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(r, 'big', `part-${i}.bin`), randomBytes(MiB));
  }

  function countFiles(dir: string): number {
    let n = 0;
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? 1 + countFiles(path.join(dir, e.name)) : 1;
    return n;
  }

  describe('restore into the same sandbox', () => {
    it('replaces the filesystem exactly and keeps running processes running', async () => {
      const id = await api.createSandbox();
      populateTree(root(id));
      const counter = await startWriter(id);
      const { op: snapOp, snapshotId } = await api.snapshot(id, 'base');
      expect(snapOp.status).toBe('succeeded');
      const expected = describeTree(root(id));

      mutate(root(id));
      const mutated = describeTree(root(id));
      expect(mutated).not.toEqual(expected);

      const opId = await restore(snapshotId);
      const op = await api.waitOp(opId);
      expect(op.status, JSON.stringify(op.error)).toBe('succeeded');
      expect(op.result).toEqual({ snapshot_id: snapshotId, sandbox_id: id, sha256: snapOp.result.sha256, size_bytes: snapOp.result.size_bytes });

      expect(describeTree(root(id))).toEqual(expected);
      expect(fs.existsSync(path.join(root(id), 'added'))).toBe(false);
      expect(fs.existsSync(path.join(root(id), 'added-top'))).toBe(false);
      expect(await leftoversOnceClosed(opId, id)).toEqual([]);

      expect(await stack.runtime.processState(id)).toBe('running');
      await expectCounting(counter);
      expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('running');
    });

    it('leaves a paused sandbox paused', async () => {
      const id = await api.createSandbox();
      populateTree(root(id));
      const counter = await startWriter(id);
      const { snapshotId } = await api.snapshot(id, 'before-pause');
      const expected = describeTree(root(id));

      const pause = await api.call('POST', `/v1/sandboxes/${id}/pause`);
      expect(pause.status).toBe(202);
      expect((await api.waitOp(pause.body.operation.id)).status).toBe('succeeded');
      expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('paused');
      expect(await stack.runtime.processState(id)).toBe('stopped');

      mutate(root(id));
      const op = await api.waitOp(await restore(snapshotId));
      expect(op.status, JSON.stringify(op.error)).toBe('succeeded');

      expect(describeTree(root(id))).toEqual(expected);
      expect(await leftoversOnceClosed(op.id, id)).toEqual([]);
      expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('paused');
      expect(await stack.runtime.processState(id)).toBe('stopped');
      await expectNotCounting(counter);
    });
  });

  describe('restore into another sandbox of the same account', () => {
    it('replaces the target tree with the snapshot tree and leaves the source alone', async () => {
      const src = await api.createSandbox();
      populateTree(root(src));
      const { op: snapOp, snapshotId } = await api.snapshot(src, 'for-target');
      const expected = describeTree(root(src));
      fs.writeFileSync(path.join(root(src), 'source-only-later'), 'x');
      const sourceAfter = describeTree(root(src));

      const target = await api.createSandbox();
      fs.mkdirSync(path.join(root(target), 'target-dir/sub'), { recursive: true });
      fs.writeFileSync(path.join(root(target), 'target-dir/sub/own.txt'), 'target data');
      fs.writeFileSync(path.join(root(target), 'proj'), 'a file where the snapshot has a directory');
      expect(describeTree(root(target))).not.toEqual(expected);

      const op = await api.waitOp(await restore(snapshotId, { to: target }));
      expect(op.status, JSON.stringify(op.error)).toBe('succeeded');
      expect(op.sandbox_id).toBe(target);
      expect(op.result).toEqual({ snapshot_id: snapshotId, sandbox_id: target, sha256: snapOp.result.sha256, size_bytes: snapOp.result.size_bytes });

      expect(describeTree(root(target))).toEqual(expected);
      expect(describeTree(root(src))).toEqual(sourceAfter);
      expect(await leftoversOnceClosed(op.id, target)).toEqual([]);
      expect((await api.call('GET', `/v1/sandboxes/${target}`)).body.state).toBe('running');
    });
  });

  describe('restore rollback', () => {
    async function prepare(name: string) {
      const id = await api.createSandbox();
      populateBig(root(id));
      const counter = await startWriter(id);
      const { op, snapshotId } = await api.snapshot(id, name);
      expect(op.status).toBe('succeeded');
      expect(op.result.size_bytes).toBeGreaterThan(8 * MiB);
      mutate(root(id));
      fs.writeFileSync(path.join(root(id), 'big/part-3.bin'), randomBytes(MiB));
      return { id, counter, snapshotId, before: describeTree(root(id)) };
    }

    // One store is enough: the keep-alive is the same code for both, and the wait is long.
    if (storeKind === 'fs') it('a restore that moves no bytes for longer than the heartbeat timeout is not taken for a dead worker', async () => {
      const id = await api.createSandbox();
      populateBig(root(id));
      const { snapshotId } = await api.snapshot(id, 'slow');
      const expected = describeTree(root(id));
      mutate(root(id));
      let stalled = false;
      faults.arm(id, async (point) => {
        if (point !== 'restore:extracting' || stalled) return;
        stalled = true;
        // No bytes move meanwhile, as when tar is still extracting what was hashed long ago.
        await sleep(DATA_HEARTBEAT_TIMEOUT_MS + 2000);
      });
      try {
        const opId = await restore(snapshotId);
        const op = await api.waitOp(opId, 60_000);
        expect(op.status, JSON.stringify(op.error)).toBe('succeeded');
        expect(stalled).toBe(true);
        expect(describeTree(root(id))).toEqual(expected);
        // The first attempt finished it: the stall did not time out and start a second one.
        expect(await finalAttempt(stack.client, opId, 'stageSnapshot')).toBe(1);
      } finally {
        faults.disarm(id);
      }
    }, 90_000);

    it('a failure mid-extraction leaves the target unchanged byte for byte', async () => {
      const { id, counter, snapshotId, before } = await prepare('extract-fault');
      let stagedFiles = -1;
      faults.arm(id, (point, info) => {
        if (point !== 'restore:extracting' || (info.bytes ?? 0) < 5 * MiB) return;
        // What tar has written so far: the rollback must remove a real partial tree.
        const staging = fs.readdirSync(stack.runtime.sandboxDir(id)).find((n) => n.startsWith('root.staging-'));
        stagedFiles = staging ? countFiles(path.join(stack.runtime.sandboxDir(id), staging)) : 0;
        throw injected(point);
      });
      try {
        const op = await api.waitOp(await restore(snapshotId));
        expect(op.status).toBe('failed');
        expect(op.error).toEqual({ code: 'injected_fault', message: 'injected fault: restore:extracting' });
      } finally {
        faults.disarm(id);
      }
      expect(stagedFiles).toBeGreaterThan(3);
      expect(describeTree(root(id))).toEqual(before);
      expect(leftovers(id)).toEqual([]);
      expect(await stack.runtime.processState(id)).toBe('running');
      await expectCounting(counter);
    });

    it('a failure after the swap puts the previous root back byte for byte', async () => {
      const { id, counter, snapshotId, before } = await prepare('swap-fault');
      let swappedTree: ReturnType<typeof describeTree> | undefined;
      faults.arm(id, (point) => {
        if (point !== 'restore:swapped') return;
        swappedTree = describeTree(root(id));
        throw injected(point);
      });
      try {
        const op = await api.waitOp(await restore(snapshotId));
        expect(op.status).toBe('failed');
        expect(op.error).toEqual({ code: 'injected_fault', message: 'injected fault: restore:swapped' });
      } finally {
        faults.disarm(id);
      }
      // The fault really came after the swap: the snapshot's tree was in place at that moment.
      expect(swappedTree).toBeDefined();
      expect(swappedTree).not.toEqual(before);
      expect(swappedTree!.some((e) => e.path === 'added-top')).toBe(false);
      expect(describeTree(root(id))).toEqual(before);
      expect(leftovers(id)).toEqual([]);
      expect(await stack.runtime.processState(id)).toBe('running');
      await expectCounting(counter);
    });

    it('a cancelled restore ends cancelled with the target unchanged and its processes resumed', async () => {
      const { id, counter, snapshotId, before } = await prepare('cancel-me');
      let extracting = false;
      faults.arm(id, async (point) => {
        if (point !== 'restore:extracting') return;
        extracting = true;
        await sleep(200);
      });
      try {
        const opId = await restore(snapshotId);
        await waitFor(() => extracting);
        // The snapshot is staged beside the root while the processes keep running; they stop only for the swap.
        expect(await stack.runtime.processState(id)).toBe('running');
        const c = await api.call('POST', `/v1/operations/${opId}/cancel`);
        expect(c.status).toBe(202);
        const op = await api.waitOp(opId, 90_000);
        expect(op.status).toBe('cancelled');
        expect(op.error?.code).toBe('cancelled');
      } finally {
        faults.disarm(id);
      }
      expect(describeTree(root(id))).toEqual(before);
      expect(leftovers(id)).toEqual([]);
      expect(await stack.runtime.processState(id)).toBe('running');
      await expectCounting(counter);
    }, 120_000);

    /** Holds the restore inside the step at `point` until the cancel has reached its workflow. */
    async function cancelWhileAt(id: string, snapshotId: string, point: string) {
      const step = faults.hold(id, point);
      try {
        const opId = await restore(snapshotId);
        await step.wasReached;
        expect((await api.call('POST', `/v1/operations/${opId}/cancel`)).status).toBe(202);
        const handle = stack.client.workflow.getHandle(opId);
        await waitFor(async () => ((await handle.fetchHistory()).events ?? []).some((e) => e.workflowExecutionCancelRequestedEventAttributes));
        // The workflow knows of the cancel while the step is still running on the host.
        await sleep(300);
        step.open();
        return await api.waitOp(opId);
      } finally {
        step.open();
        faults.disarm(id);
      }
    }

    it('a cancel that arrives during the swap rolls the swap back', async () => {
      const { id, counter, snapshotId, before } = await prepare('cancel-at-swap');
      const op = await cancelWhileAt(id, snapshotId, 'restore:swapped');
      expect(op.status).toBe('cancelled');
      expect(op.error?.code).toBe('cancelled');
      expect(describeTree(root(id))).toEqual(before);
      expect(leftovers(id)).toEqual([]);
      expect(await stack.runtime.processState(id)).toBe('running');
      await expectCounting(counter);
    });

    it('a cancel that arrives once the previous root is discarded lets the restore finish', async () => {
      const { id, counter, snapshotId } = await prepare('cancel-at-commit');
      const expected = describeTree(root(id));
      const restored = await (async () => {
        // What the snapshot holds: the tree as it was when prepare() took it.
        const other = await api.createSandbox();
        const op = await api.waitOp(await restore(snapshotId, { to: other }));
        expect(op.status).toBe('succeeded');
        return describeTree(root(other));
      })();
      expect(restored).not.toEqual(expected);

      const op = await cancelWhileAt(id, snapshotId, 'restore:committed');
      // Past the point of no return: the operation reports what happened to the sandbox.
      expect(op.status, JSON.stringify(op.error)).toBe('succeeded');
      expect(describeTree(root(id))).toEqual(restored);
      expect(await leftoversOnceClosed(op.id, id)).toEqual([]);
      expect(await stack.runtime.processState(id)).toBe('running');
      await expectCounting(counter);
    });
  });

  describe('fork', () => {
    it('makes a sandbox with the source template and resources, the snapshot tree, and no sessions', async () => {
      const src = await api.createSandbox({ resources: { cpu: 2, memory_mb: 2048 }, idle_timeout_s: 900 });
      populateTree(root(src));
      await api.exec(src, ['sh', '-c', 'echo hello']);
      await api.exec(src, ['sleep', '0.1']);
      expect((await api.call('GET', `/v1/sandboxes/${src}/sessions`)).body.sessions).toHaveLength(2);
      const { snapshotId } = await api.snapshot(src, 'fork-me');
      const expected = describeTree(root(src));
      mutate(root(src));

      const r = await api.call('POST', '/v1/sandboxes', { from_snapshot: snapshotId });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      const newId = r.body.sandbox.id as string;
      expect(newId).not.toBe(src);
      expect(r.body.operation).toMatchObject({ type: 'fork', status: 'running', sandbox_id: newId, snapshot_id: snapshotId });
      const op = await api.waitOp(r.body.operation.id);
      expect(op.status, JSON.stringify(op.error)).toBe('succeeded');
      expect(op.result).toMatchObject({ sandbox_id: newId, snapshot_id: snapshotId });

      const source = (await api.call('GET', `/v1/sandboxes/${src}`)).body;
      const fork = (await api.call('GET', `/v1/sandboxes/${newId}`)).body;
      expect(fork.template).toBe(source.template);
      expect(fork.resources).toEqual({ cpu: 2, memory_mb: 2048 });
      expect(fork.idle_timeout_s).toBe(900);
      expect(fork.state).toBe('running');
      expect(describeTree(root(newId))).toEqual(expected);
      expect(await leftoversOnceClosed(op.id, newId)).toEqual([]);
      expect(await api.call('GET', `/v1/sandboxes/${newId}/sessions`)).toMatchObject({ status: 200, body: { sessions: [] } });
      // The fork is usable.
      expect(await api.exec(newId, ['cat', 'proj/src/main.py'])).toMatchObject({ exit_code: 0, stdout: 'print("hi")\n' });
    });

    it('a failed fork removes the half-made sandbox', async () => {
      const src = await api.createSandbox();
      populateBig(root(src));
      const { snapshotId } = await api.snapshot(src, 'fork-fails');
      const before = describeTree(root(src));
      let faultedIn: string | undefined;
      faults.arm(snapshotId, (point, info) => {
        if (point !== 'restore:extracting' || (info.bytes ?? 0) < 2 * MiB) return;
        faultedIn = info.sandboxId;
        throw injected(point);
      });
      let newId = '';
      try {
        const r = await api.call('POST', '/v1/sandboxes', { from_snapshot: snapshotId });
        expect(r.status).toBe(202);
        newId = r.body.sandbox.id;
        const op = await api.waitOp(r.body.operation.id);
        expect(op.status).toBe('failed');
        expect(op.error).toEqual({ code: 'injected_fault', message: 'injected fault: restore:extracting' });
      } finally {
        faults.disarm(snapshotId);
      }
      expect(faultedIn).toBe(newId);
      expect(await api.call('GET', `/v1/sandboxes/${newId}`)).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
      expect(fs.existsSync(stack.runtime.sandboxDir(newId))).toBe(false);
      const listed = (await api.call('GET', '/v1/sandboxes')).body.sandboxes.map((s: { id: string }) => s.id);
      expect(listed).toContain(src);
      expect(listed).not.toContain(newId);
      // The source is untouched and its snapshot still usable.
      expect(describeTree(root(src))).toEqual(before);
      expect((await api.call('GET', `/v1/snapshots/${snapshotId}`)).body.state).toBe('ready');
    });
  });

  describe('cross-account access', () => {
    it('refuses restore and fork across accounts with 404 not_found, and changes nothing', async () => {
      const b = await stack.newAccount('restore-b');
      const apiB = apiClient(stack.apiUrl!, b.apiKey);

      const sandA = await api.createSandbox();
      populateTree(root(sandA));
      const { snapshotId: snapA } = await api.snapshot(sandA, 'a-snap');
      const sandB = await apiB.createSandbox();
      fs.writeFileSync(path.join(root(sandB), 'b-own'), 'b');
      const { snapshotId: snapB } = await apiB.snapshot(sandB, 'b-snap');
      fs.writeFileSync(path.join(root(sandA), 'a-after'), 'a');
      const treeA = describeTree(root(sandA));
      const treeB = describeTree(root(sandB));
      const ops = () =>
        stack.db.selectFrom('operations').select('id').where('account_id', 'in', [accountA, b.id]).where('type', 'in', ['restore', 'fork']).execute();
      const opsBefore = await ops();

      const notFound = { status: 404, body: { error: { code: 'not_found' } } };
      // B restores A's snapshot (into A's sandbox, and into B's own).
      expect(await apiB.call('POST', `/v1/snapshots/${snapA}/restore`, {})).toMatchObject(notFound);
      expect(await apiB.call('POST', `/v1/snapshots/${snapA}/restore`, { to: sandB })).toMatchObject(notFound);
      // A restores its own snapshot into B's sandbox.
      expect(await api.call('POST', `/v1/snapshots/${snapA}/restore`, { to: sandB })).toMatchObject(notFound);
      // B restores its own snapshot into A's sandbox.
      expect(await apiB.call('POST', `/v1/snapshots/${snapB}/restore`, { to: sandA })).toMatchObject(notFound);
      // Fork across accounts, both ways.
      expect(await apiB.call('POST', '/v1/sandboxes', { from_snapshot: snapA })).toMatchObject(notFound);
      expect(await api.call('POST', '/v1/sandboxes', { from_snapshot: snapB })).toMatchObject(notFound);

      expect(await ops()).toEqual(opsBefore);
      expect((await apiB.call('GET', '/v1/sandboxes')).body.sandboxes.map((s: { id: string }) => s.id)).toEqual([sandB]);
      await sleep(500);
      expect(describeTree(root(sandA))).toEqual(treeA);
      expect(describeTree(root(sandB))).toEqual(treeB);
    });
  });
});
