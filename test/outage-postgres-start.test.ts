/**
 * Issue 8, the other timing: PostgreSQL goes away just as a snapshot's host step (snapshotSandbox)
 * starts, and stays away for 40 s. The worker holds that step for 2 s (CAGED_TEST_HOLD) so the
 * catalog can be stopped exactly there. The step reads the catalog (the account's usage, for the
 * size limit) after it has quiesced the sandbox; it must not leave the sandbox stopped, the failure
 * must carry the code `unavailable` (never `internal`), and nothing may be orphaned.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestStack } from './support/stack.js';
import { startPrivatePostgres, type PrivatePostgres } from './support/private-postgres.js';
import { alive, waitForOutput } from './support/processes.js';
import type { apiClient } from './support/http.js';
import { closePostgresOutage, startOutageStack } from './support/outage.js';
import { MiB, sleep } from './support/wait.js';
import { stoppedGroupMembers } from './support/sandbox-procs.js';
import { openUploadKeys } from './support/s3.js';
import { getSnapshot } from '../src/catalog/snapshots.js';

const OUTAGE_MS = 40_000;

let pg: PrivatePostgres;
let stack: TestStack;
let apiProc: { child: ChildProcess; url: string };
let worker: ChildProcess;
let api: ReturnType<typeof apiClient>;
let outcome: { status: string; code?: string } | undefined;

beforeAll(async () => {
  pg = await startPrivatePostgres();
  ({ stack, apiProc, worker, api } = await startOutageStack(
    'outage-postgres-start',
    { databaseUrl: pg.url },
    { CAGED_TEST_HOLD: 'createSnapshotWorkflow:activity:snapshotSandbox', CAGED_TEST_HOLD_MAX_MS: '2000' },
  ));
});

afterAll(() => closePostgresOutage(pg, stack));

describe('PostgreSQL goes away for 40 s as a snapshot starts its host step', () => {
  it('the snapshot ends succeeded or failed with `unavailable`; the sandbox runs; nothing orphaned', { timeout: 180_000 }, async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    fs.writeFileSync(path.join(stack.runtime.rootDir(id), 'random.bin'), randomBytes(4 * MiB));
    const { pid } = await api.exec(id, ['sh', '-c', 'while true; do sleep 0.1; done'], true);
    const posted = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'at-the-start' });
    expect(posted.status).toBe(202);
    await waitForOutput(worker, 'held activity:snapshotSandbox\n', 60_000);
    await pg.stop();
    for (const downAt = Date.now(); Date.now() - downAt < OUTAGE_MS; ) {
      expect(alive(apiProc.child)).toBe(true);
      expect(alive(worker)).toBe(true);
      await sleep(1000);
    }
    // Whatever the step did meanwhile, the sandbox is not left stopped while the catalog is away.
    expect(await stoppedGroupMembers(pid)).toEqual([]);
    await pg.start();

    const op = await api.waitOp(posted.body.operation.id, 90_000);
    outcome = { status: op.status, code: op.error?.code };
    expect(['succeeded', 'failed'], JSON.stringify(op)).toContain(op.status);
    if (op.status === 'failed') {
      expect(op.error.code, JSON.stringify(op.error)).toBe('unavailable');
      const snap = (await getSnapshot(stack.db, posted.body.snapshot.id))!;
      expect(snap.state).toBe('failed');
      expect(await stack.store.head(snap.object_key)).toBeFalsy();
    }
    expect(await openUploadKeys(stack)).toEqual([]);
    expect(await stoppedGroupMembers(pid)).toEqual([]);
    expect(alive(apiProc.child)).toBe(true);
    expect(alive(worker)).toBe(true);
  });

  // The host step waits (heartbeating) for an unreachable catalog before it stops the sandbox, so a
  // 40 s outage costs the snapshot a wait, not its attempts.
  it('a catalog outage of 40 s does not fail the snapshot', () => {
    expect(outcome?.status).toBe('succeeded');
  });
});
