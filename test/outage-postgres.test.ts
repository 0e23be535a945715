/**
 * Issue 8: a PostgreSQL outage in the middle of a snapshot. The catalog is a private cluster the
 * test stops (pg_ctl -m fast, which ends every session with 57P01) for about 12 s while the upload
 * runs, then starts again. `caged api` and the worker run as processes of their own, so a crash
 * would show as a dead process.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestStack } from './support/stack.js';
import { startPrivatePostgres, type PrivatePostgres } from './support/private-postgres.js';
import { alive, killChild, startCagedWorkerProcess, waitForOutput } from './support/processes.js';
import type { apiClient } from './support/http.js';
import { closePostgresOutage, startOutageStack, waitForUpload } from './support/outage.js';
import { MiB, sleep } from './support/wait.js';
import { describeTree } from './support/tree.js';
import { stoppedGroupMembers } from './support/sandbox-procs.js';

const OUTAGE_MS = 12_000;

let pg: PrivatePostgres;
let stack: TestStack;
let apiProc: { child: ChildProcess; url: string };
let worker: ChildProcess;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  pg = await startPrivatePostgres();
  // 300 ms per 1 MiB chunk read from the spool: a 48 MiB snapshot uploads for ~15 s, long enough to lose PostgreSQL in the middle.
  // The first restore is held 3 s in its extraction, so the catalog can be taken away while it runs.
  ({ stack, apiProc, worker, api } = await startOutageStack(
    'outage-postgres',
    { databaseUrl: pg.url },
    { CAGED_TEST_SLOW_UPLOAD_MS: '300', CAGED_TEST_HOLD: 'restoreWorkflow:restore:extracting', CAGED_TEST_HOLD_MAX_MS: '3000' },
  ));
});

afterAll(() => closePostgresOutage(pg, stack));

/** Members of the restore target's group still stopped when PostgreSQL had been away for OUTAGE_MS. */
let stoppedAtEndOfOutage: number[] | undefined;

describe('PostgreSQL stops in the middle of a restore', () => {
  it("the restore completes once it is back and the target runs again with the snapshot's tree", { timeout: 180_000 }, async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const root = stack.runtime.rootDir(id);
    fs.writeFileSync(path.join(root, 'random.bin'), randomBytes(4 * MiB));
    const { pid } = await api.exec(id, ['sh', '-c', 'while true; do sleep 0.1; done'], true);
    const base = await api.snapshot(id, 'base');
    expect(base.op.status, JSON.stringify(base.op)).toBe('succeeded');
    const expected = describeTree(root);
    fs.writeFileSync(path.join(root, 'random.bin'), 'changed');

    const posted = await api.call('POST', `/v1/snapshots/${base.snapshotId}/restore`, {});
    expect(posted.status).toBe(202);
    await waitForOutput(worker, 'held restore:extracting\n', 60_000);
    // Staged beside the root while the processes run.
    expect(await stoppedGroupMembers(pid)).toEqual([]);
    await pg.stop();
    // The extraction needs no catalog: it finishes about 3 s into the outage.
    await sleep(OUTAGE_MS);
    stoppedAtEndOfOutage = await stoppedGroupMembers(pid);
    expect(alive(apiProc.child)).toBe(true);
    expect(alive(worker)).toBe(true);
    await pg.start();

    const op = await api.waitOp(posted.body.operation.id, 90_000);
    expect(op.status, JSON.stringify(op)).toBe('succeeded');
    expect(describeTree(root)).toEqual(expected);
    expect(await stoppedGroupMembers(pid)).toEqual([]);
  });

  // The restore stages while the target runs and stops it only for the swap, which takes host steps
  // alone: an unreachable catalog never keeps the target stopped.
  it('the target does not stay stopped for the outage once the disk work is done', () => {
    expect(stoppedAtEndOfOutage).toEqual([]);
  });
});

describe('PostgreSQL stops in the middle of a snapshot', () => {
  it('api and worker survive, the API answers 503 unavailable meanwhile, the snapshot completes, the sandbox runs again', { timeout: 240_000 }, async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const root = stack.runtime.rootDir(id);
    fs.writeFileSync(path.join(root, 'random.bin'), randomBytes(48 * MiB));
    const { pid } = await api.exec(id, ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > counter; sleep 0.05; done'], true);
    expect(await stoppedGroupMembers(pid)).toEqual([]);

    const posted = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'through-the-outage' });
    expect(posted.status).toBe(202);
    const opId = posted.body.operation.id as string;
    const snapshotId = posted.body.snapshot.id as string;
    await waitForUpload(api, opId, 4 * MiB);
    // Mid-upload the sandbox runs again already: tar has read the tree into the spool file.
    expect(await stoppedGroupMembers(pid)).toEqual([]);

    await pg.stop();
    const downAt = Date.now();
    const seen: { status: number; code?: string }[] = [];
    while (Date.now() - downAt < OUTAGE_MS) {
      const r = await api.call('GET', `/v1/operations/${opId}`);
      seen.push({ status: r.status, code: r.body?.error?.code });
      // A request that would start an operation is refused cleanly too.
      if (seen.length === 3) {
        const p = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'during-the-outage' });
        seen.push({ status: p.status, code: p.body?.error?.code });
      }
      expect(alive(apiProc.child), 'caged api died while PostgreSQL was down').toBe(true);
      expect(alive(worker), 'the worker died while PostgreSQL was down').toBe(true);
      await sleep(500);
    }
    expect(seen.length).toBeGreaterThan(5);
    // Every answer while the catalog was away was a clean 503 unavailable, never a 500 or a hang.
    for (const s of seen) expect(s).toEqual({ status: 503, code: 'unavailable' });

    await pg.start();
    const upAt = Date.now();
    // Requests work again without restarting anything (the pool replaced its dead connections).
    const op = await api.waitOp(opId, 90_000).catch(async (err) => {
      const d = await stack.client.workflow.getHandle(opId).describe();
      const pending = d.raw.pendingActivities?.map((a) => ({ type: a.activityType?.name, attempt: a.attempt, state: a.state, lastFailure: a.lastFailure?.message, hb: a.lastHeartbeatTime }));
      throw new Error(`${(err as Error).message}\npending: ${JSON.stringify(pending)}`);
    });
    const endedAfterRestartMs = Date.now() - upAt;
    // It succeeds: the upload itself needs no catalog (progress writes are best-effort and skipped
    // while it is away), and the catalog steps after it retry until PostgreSQL is back.
    expect(op.status, JSON.stringify(op)).toBe('succeeded');
    expect(endedAfterRestartMs).toBeLessThan(60_000);
    expect(alive(apiProc.child)).toBe(true);
    expect(alive(worker)).toBe(true);

    // The sandbox's processes run again: no member of its group is stopped, and the counter moves.
    expect(await stoppedGroupMembers(pid)).toEqual([]);
    const before = fs.readFileSync(path.join(root, 'counter'), 'utf8');
    await sleep(400);
    expect(fs.readFileSync(path.join(root, 'counter'), 'utf8')).not.toBe(before);
    const snap = (await api.call('GET', `/v1/snapshots/${snapshotId}`)).body;
    expect(snap.state).toBe('ready');
    expect(snap.size_bytes).toBeGreaterThan(48 * MiB);
    // The refused POST left no snapshot behind.
    const names = (await api.call('GET', `/v1/sandboxes/${id}/snapshots`)).body.snapshots.map((s: { name: string }) => s.name);
    expect(names).toEqual(['through-the-outage']);

    // Later operations work: a snapshot, a change, and a restore that brings the tree back byte for byte.
    fs.mkdirSync(path.join(root, 'later'));
    fs.writeFileSync(path.join(root, 'later/file.bin'), randomBytes(3 * MiB));
    const later = await api.snapshot(id, 'after-the-outage');
    expect(later.op.status, JSON.stringify(later.op)).toBe('succeeded');
    const expected = describeTree(root).filter((e) => e.path !== 'counter');
    fs.rmSync(path.join(root, 'later'), { recursive: true });
    fs.writeFileSync(path.join(root, 'random.bin'), 'overwritten');
    const restore = await api.call('POST', `/v1/snapshots/${later.snapshotId}/restore`, {});
    expect(restore.status).toBe(202);
    const restored = await api.waitOp(restore.body.operation.id, 90_000);
    expect(restored.status, JSON.stringify(restored)).toBe('succeeded');
    expect(describeTree(root).filter((e) => e.path !== 'counter')).toEqual(expected);
    expect(await stoppedGroupMembers(pid)).toEqual([]);
  });
});

describe('a production `caged worker` and PostgreSQL fast shutdown', () => {
  it('the worker process survives the shutdown of its pooled connections and serves again once PostgreSQL is back', { timeout: 300_000 }, async () => {
    // Only the production worker serves from here on.
    await killChild(worker, 'SIGKILL');
    const real = await startCagedWorkerProcess(stack, 'outage-postgres', { databaseUrl: pg.url });
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'file.bin'), randomBytes(MiB));
    // An operation first, so the worker's pool holds idle connections when PostgreSQL goes.
    const before = await api.snapshot(id, 'before');
    expect(before.op.status, JSON.stringify(before.op)).toBe('succeeded');
    await pg.stop();
    await sleep(5_000);
    expect(alive(real), 'caged worker died when PostgreSQL shut down').toBe(true);
    await pg.start();
    const after = await api.snapshot(id, 'after');
    expect(after.op.status, JSON.stringify(after.op)).toBe('succeeded');
    expect(alive(real)).toBe(true);
    expect(alive(apiProc.child)).toBe(true);
  });
});
