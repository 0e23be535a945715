import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { waitFor } from './support/wait.js';
import { startTemporalDevServer, type DevServer } from '../src/runtime/temporal-dev-server.js';
import { freePort } from '../src/runtime/child-process.js';
import { temporalCliPath } from '../src/runtime/tools.js';
import { replayHistoryFiles } from '../src/replay/replay-histories.js';
import { sandboxStatusQuery, sandboxWorkflowId } from '../src/shared/definitions.js';

/**
 * The sandbox workflow's continue-as-new, for real: a Temporal dev server of its own that suggests
 * it after 40 events, so a few operations take the sandbox workflow through it. What it carries
 * (paused, the queue, the idle clock) must survive, and operations after it must run.
 */
const SUGGEST_AFTER_EVENTS = 40;

describe('the sandbox workflow continues as new when its history grows', () => {
  let server: DevServer;
  let stack: TestStack;
  let api: ReturnType<typeof apiClient>;

  beforeAll(async () => {
    server = await startTemporalDevServer({
      port: await freePort(),
      headless: true,
      logFile: path.join(inject('logDir'), 'temporal-continue-as-new.log'),
      dynamicConfig: [`limit.historyCount.suggestContinueAsNew=${SUGGEST_AFTER_EVENTS}`],
    });
    stack = await startStack({ api: true, temporalAddress: server.address });
    api = apiClient(stack.apiUrl!, (await stack.newAccount()).apiKey);
  });
  afterAll(async () => {
    await stack?.close();
    await server?.stop();
  });

  it('carries the paused state across runs, runs what comes after, and its history replays', { timeout: 180_000 }, async () => {
    const id = await api.createSandbox({ idle_timeout_s: 0 });
    const root = stack.runtime.rootDir(id);
    fs.writeFileSync(path.join(root, 'kept.txt'), 'before the new run\n');
    const handle = stack.client.workflow.getHandle(sandboxWorkflowId(id));
    const firstRunId = (await handle.describe()).runId;

    // Operations until the workflow has moved to a new run; the last one leaves the sandbox paused.
    const snapshots: string[] = [];
    let runId = firstRunId;
    for (let i = 0; i < 12 && runId === firstRunId; i++) {
      const snap = await api.snapshot(id, `s${i}`);
      expect(snap.op.status).toBe('succeeded');
      snapshots.push(snap.snapshotId);
      const p = await api.call('POST', `/v1/sandboxes/${id}/pause`);
      expect((await api.waitOp(p.body.operation.id)).status).toBe('succeeded');
      // With its queue empty, a suggested continue-as-new happens at once; otherwise not at all.
      const moved = await waitFor(async () => (runId = (await handle.describe()).runId) !== firstRunId, 3_000).then(
        () => true,
        () => false,
      );
      if (moved) break;
      const r = await api.call('POST', `/v1/sandboxes/${id}/resume`);
      expect(r.status).toBe(200);
    }
    expect(runId).not.toBe(firstRunId);
    const first = await stack.client.workflow.getHandle(sandboxWorkflowId(id), firstRunId).describe();
    expect(first.status.name).toBe('CONTINUED_AS_NEW');
    expect((await handle.describe()).status.name).toBe('RUNNING');

    // The new run knows the sandbox is paused, and takes operations.
    expect(await handle.query(sandboxStatusQuery)).toEqual({ queued: [], paused: true });
    const resumed = await api.call('POST', `/v1/sandboxes/${id}/resume`);
    expect(resumed.status).toBe(200);
    // The resume answers once its operation is recorded; the workflow takes it in a moment later.
    await waitFor(async () => !(await handle.query(sandboxStatusQuery)).paused, 10_000, 'the new run to take the resume');
    fs.writeFileSync(path.join(root, 'kept.txt'), 'changed after\n');
    const restore = await api.call('POST', `/v1/snapshots/${snapshots[0]}/restore`, {});
    expect(restore.status).toBe(202);
    expect((await api.waitOp(restore.body.operation.id)).status).toBe('succeeded');
    expect(fs.readFileSync(path.join(root, 'kept.txt'), 'utf8')).toBe('before the new run\n');

    // The first run's history, which ends in the continue-as-new, replays on this code.
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'caged-can-')), 'sandboxWorkflow.continue-as-new.json');
    fs.writeFileSync(file, execFileSync(temporalCliPath(), ['workflow', 'show', '--address', server.address, '-w', sandboxWorkflowId(id), '-r', firstRunId, '--output', 'json'], { maxBuffer: 64 * 1024 * 1024 }));
    expect(fs.readFileSync(file, 'utf8')).toContain('workflowExecutionContinuedAsNewEventAttributes');
    const outcomes = await replayHistoryFiles([file], { code: inject('workflowCode') });
    expect(outcomes.filter((o) => o.error)).toEqual([]);
    fs.copyFileSync(file, path.join(inject('logDir'), path.basename(file)));
  });
});
