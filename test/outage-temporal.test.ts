/**
 * Issue 8: the Temporal server dies in the middle of a snapshot (SIGKILL) and comes back on the same
 * port with the same SQLite database. This file runs a dev server of its own (not the shared one of
 * global-setup.ts), with `caged api` and a worker as processes of their own.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { TestStack } from './support/stack.js';
import { alive, killAllChildren } from './support/processes.js';
import type { apiClient } from './support/http.js';
import { startOutageStack, waitForUpload } from './support/outage.js';
import { MiB, sleep } from './support/wait.js';
import { stoppedGroupMembers } from './support/sandbox-procs.js';
import { describeTree } from './support/tree.js';
import { startTemporalDevServer, type DevServer } from '../src/runtime/temporal-dev-server.js';
import { freeTemporalPort } from '../src/runtime/child-process.js';

/** CAGED_TEST_TEMPORAL_OUTAGE_MS tries longer outages (past the 15 s heartbeat timeout, say). */
const OUTAGE_MS = Number(process.env.CAGED_TEST_TEMPORAL_OUTAGE_MS ?? 8_000);

let temporal: DevServer;
let port: number;
let dbFile: string;
let stack: TestStack;
let apiProc: { child: ChildProcess; url: string };
let worker: ChildProcess;
let api: ReturnType<typeof apiClient>;
/** The sandbox of the first test, and what the refused POST left, for the second. */
let sandboxId: string | undefined;

const startServer = () => startTemporalDevServer({ port, headless: true, dbFile, logFile: path.join(inject('logDir'), 'outage-temporal-server.log') });

beforeAll(async () => {
  port = await freeTemporalPort();
  dbFile = path.join(fs.mkdtempSync(path.join(inject('logDir'), 'outage-temporal-')), 'temporal.sqlite');
  temporal = await startServer();
  // 300 ms per 1 MiB chunk read from the spool: a 24 MiB snapshot uploads for ~7 s.
  ({ stack, apiProc, worker, api } = await startOutageStack('outage-temporal', { temporalAddress: temporal.address }, { CAGED_TEST_SLOW_UPLOAD_MS: '300' }));
});

afterAll(async () => {
  await killAllChildren();
  await stack?.close();
  await temporal?.stop();
});

describe('the Temporal server is killed in the middle of a snapshot', () => {
  it('comes back on the same port and database; the snapshot completes; api and worker stay alive', { timeout: 240_000 }, async () => {
    const id = (sandboxId = await api.createSandbox({ idle_timeout_s: 0 }));
    const root = stack.runtime.rootDir(id);
    fs.writeFileSync(path.join(root, 'random.bin'), randomBytes(24 * MiB));
    const { pid } = await api.exec(id, ['sh', '-c', 'while true; do sleep 0.1; done'], true);

    const posted = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'through-the-outage' });
    expect(posted.status).toBe(202);
    const opId = posted.body.operation.id as string;
    const snapshotId = posted.body.snapshot.id as string;
    await waitForUpload(api, opId, 2 * MiB);

    temporal.child.kill('SIGKILL');
    await new Promise<void>((r) => (temporal.child.exitCode !== null || temporal.child.signalCode !== null ? r() : temporal.child.once('exit', () => r())));
    const downAt = Date.now();
    // An operation cannot start while Temporal is away: the API says so with a 503, not a 500.
    const refused = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'during-the-outage' });
    expect(refused.status, JSON.stringify(refused.body)).toBe(503);
    expect(refused.body.error.code).toBe('unavailable');
    // Reads that need only the catalog still work.
    expect((await api.call('GET', `/v1/operations/${opId}`)).status).toBe(200);
    while (Date.now() - downAt < OUTAGE_MS) {
      expect(alive(apiProc.child), 'caged api died while Temporal was down').toBe(true);
      expect(alive(worker), 'the worker died while Temporal was down').toBe(true);
      await sleep(500);
    }

    temporal = await startServer();
    const upAt = Date.now();
    const op = await api.waitOp(opId, 120_000);
    expect(op.status, JSON.stringify(op)).toBe('succeeded');
    expect(Date.now() - upAt).toBeLessThan(120_000);
    expect(alive(apiProc.child)).toBe(true);
    expect(alive(worker)).toBe(true);
    expect(await stoppedGroupMembers(pid)).toEqual([]);
    expect((await api.call('GET', `/v1/snapshots/${snapshotId}`)).body.state).toBe('ready');

    // The same processes run later operations: a restore of that snapshot brings the tree back.
    const expected = describeTree(root);
    fs.writeFileSync(path.join(root, 'random.bin'), 'overwritten');
    const restore = await api.call('POST', `/v1/snapshots/${snapshotId}/restore`, {});
    expect(restore.status).toBe(202);
    const restored = await api.waitOp(restore.body.operation.id, 90_000);
    expect(restored.status, JSON.stringify(restored)).toBe('succeeded');
    expect(describeTree(root)).toEqual(expected);
    expect(await stoppedGroupMembers(pid)).toEqual([]);
  });

  // A request Temporal never received (gRPC UNAVAILABLE) ends failed at once and releases what it
  // reserved: no pending snapshot keeps its name or bytes, no operation stays running.
  it('a request refused while Temporal was away leaves no pending snapshot and no running operation behind', async () => {
    expect(sandboxId).toBeTruthy();
    const snaps = (await api.call('GET', `/v1/sandboxes/${sandboxId}/snapshots`)).body.snapshots as { name: string; state: string }[];
    expect(snaps.filter((s) => s.state === 'pending')).toEqual([]);
    expect(snaps.map((s) => s.name)).not.toContain('during-the-outage');
    await sleep(5_500); // reconcileOperation only looks at rows idle for 5 s
    const running = (await api.call('GET', `/v1/operations?sandbox_id=${sandboxId}&status=running`)).body.operations as { id: string }[];
    for (const o of running) expect((await api.call('GET', `/v1/operations/${o.id}`)).body.status).not.toBe('running');
  });
});
