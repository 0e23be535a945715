import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it, inject } from 'vitest';
import { defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { startTemporalDevServer, type DevServer } from '../src/runtime/temporal-dev-server.js';
import { freePort } from '../src/runtime/child-process.js';
import { sandboxStatusQuery, sandboxWorkflowId, type SandboxWorkflowInput } from '../src/shared/definitions.js';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { faultRegistry } from './support/faults.js';
import { historyJson } from '../src/replay/replay-histories.js';
import { expectConsistent } from './support/verify.js';
import { waitFor } from './support/wait.js';

/**
 * The sandbox workflow continues as new once Temporal suggests it and its queue is empty. Its own
 * dev server suggests that after 40 events (the default is thousands), so a handful of operations
 * on one sandbox cross it. CAGED_RECORD_HISTORY=<file> saves the run that continued as new, for
 * test/histories/ (the replay test).
 */
const SUGGEST_AFTER_EVENTS = 40;
const BURST = 6;

const faults = faultRegistry();
let server: DevServer;
let stack: TestStack;
let accountId: string;
let api: ReturnType<typeof apiClient>;

beforeAll(async () => {
  server = await startTemporalDevServer({
    port: await freePort(),
    headless: true,
    logFile: path.join(inject('logDir'), 'temporal-continue-as-new.log'),
    dynamicConfig: [`limit.historyCount.suggestContinueAsNew=${SUGGEST_AFTER_EVENTS}`],
  });
  stack = await startStack({ store: 'fs', catalog: 'postgres', api: true, temporalAddress: server.address, faultHook: faults.hook });
  const account = await stack.newAccount('continue-as-new');
  accountId = account.id;
  api = apiClient(stack.apiUrl!, account.apiKey);
});
afterAll(async () => {
  await stack?.close();
  await server?.stop();
});

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

async function eventsOf(workflowId: string, runId: string): Promise<HistoryEvent[]> {
  return (await stack.client.workflow.getHandle(workflowId, runId).fetchHistory()).events ?? [];
}

const childrenStarted = (events: HistoryEvent[]) =>
  events.flatMap((e) => e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId ?? []);

async function submitted(r: { status: number; body: any }): Promise<string> {
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  return r.body.operation.id;
}

async function succeeded(opId: string): Promise<void> {
  const op = await api.waitOp(opId);
  expect(op.status, `${opId}: ${JSON.stringify(op.error)}`).toBe('succeeded');
}

const parentRunOf = async (opId: string) => (await stack.client.workflow.getHandle(opId).describe()).parentExecution?.runId;

it('continues as new with its paused state and queue intact, and keeps running the sandbox', async () => {
  // idle_timeout_s 0: no touch signals or idle timer, so the history holds the operations alone.
  const id = await api.createSandbox({ idle_timeout_s: 0 });
  const wfId = sandboxWorkflowId(id);
  const entity = stack.client.workflow.getHandle(wfId);
  const firstRun = (await entity.describe()).runId;
  const before = randomBytes(64 * 1024);
  const dataFile = () => fs.readFileSync(path.join(stack.runtime.rootDir(id), 'data.bin'));
  const write = async (bytes: Buffer) => {
    expect((await api.call('PUT', `/v1/sandboxes/${id}/files/data.bin`, new Uint8Array(bytes))).status).toBe(204);
    expect(dataFile().equals(bytes)).toBe(true);
  };
  await write(before);
  // A process, so that paused and resumed are states of the sandbox's processes too.
  await api.exec(id, ['sleep', '600'], true);
  expect(await stack.runtime.processState(id)).toBe('running');

  // The pause comes first, well before the suggestion, so the run that continues is a paused sandbox's.
  const pauseOp = await submitted(await api.call('POST', `/v1/sandboxes/${id}/pause`));
  await succeeded(pauseOp);

  // A burst queued behind a held snapshot: the suggestion arrives while operations wait in the queue.
  const held = faults.hold(id, 'upload:progress');
  const burst: string[] = [];
  const burstSnapshots: string[] = [];
  for (let i = 1; i <= BURST; i++) {
    const r = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: `s${i}` });
    burst.push(await submitted(r));
    burstSnapshots.push(r.body.snapshot.id);
  }
  await held.wasReached;
  await waitFor(async () => (await entity.query(sandboxStatusQuery)).queued.length === BURST - 1, 30_000, 'the burst to queue');
  held.open();
  faults.disarm(id);
  for (const op of burst) await succeeded(op);

  await waitFor(async () => (await entity.describe()).runId !== firstRun, 30_000, 'the sandbox workflow to continue as new');
  const secondRun = (await entity.describe()).runId;
  expect((await stack.client.workflow.getHandle(wfId, firstRun).describe()).status.name).toBe('CONTINUED_AS_NEW');
  expect((await entity.describe()).status.name).toBe('RUNNING');

  const first = await eventsOf(wfId, firstRun);
  // Every operation ran in the first run, in arrival order: none was carried off or dropped.
  expect(childrenStarted(first)).toEqual([pauseOp, ...burst]);
  // The suggestion came while the burst was still queued, and the run waited for the queue to drain.
  const suggestedAt = first.findIndex((e) => e.workflowTaskStartedEventAttributes?.suggestContinueAsNew);
  const lastChildAt = first.map((e) => !!e.startChildWorkflowExecutionInitiatedEventAttributes).lastIndexOf(true);
  expect(suggestedAt).toBeGreaterThan(0);
  expect(suggestedAt).toBeLessThan(lastChildAt);
  const can = first.at(-1)!.workflowExecutionContinuedAsNewEventAttributes;
  expect(can?.newExecutionRunId).toBe(secondRun);
  const carried = defaultPayloadConverter.fromPayload(can!.input!.payloads![0]! as never) as SandboxWorkflowInput;
  expect(carried).toMatchObject({ sandboxId: id, accountId, idleTimeoutSeconds: 0, paused: true, queue: [] });
  expect(await entity.query(sandboxStatusQuery)).toEqual({ queued: [], paused: true });

  // An operation submitted after the continue-as-new runs in the new run, on a sandbox still paused.
  const whilePaused = await api.snapshot(id, 'after-can-paused');
  expect(whilePaused.op.status).toBe('succeeded');
  expect(await parentRunOf(whilePaused.op.id)).toBe(secondRun);
  expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('paused');
  expect(await stack.runtime.processState(id)).toBe('stopped');

  const resumed = await api.call('POST', `/v1/sandboxes/${id}/resume`);
  expect(resumed.status).toBe(200);
  expect(resumed.body.state).toBe('running');
  expect(await stack.runtime.processState(id)).toBe('running');
  // The API answers once the catalog says so; the workflow takes the child's end a moment later.
  await waitFor(async () => !(await entity.query(sandboxStatusQuery)).paused, 10_000, 'the new run to see the resume');
  const after = randomBytes(64 * 1024);
  await write(after);
  const later = await api.snapshot(id, 'after-can');
  expect(later.op.status).toBe('succeeded');

  const listed = (await api.call('GET', `/v1/sandboxes/${id}/snapshots`)).body.snapshots as { id: string; name: string; state: string; kind: string }[];
  expect(listed.filter((s) => s.kind === 'manual').map((s) => s.name).sort()).toEqual([...burst.map((_, i) => `s${i + 1}`), 'after-can', 'after-can-paused'].sort());
  expect(listed.filter((s) => s.kind === 'auto')).toHaveLength(1);
  expect(listed.every((s) => s.state === 'ready')).toBe(true);

  // A snapshot taken before the continue-as-new restores its bytes exactly, and so does one taken after.
  const restoreOld = await submitted(await api.call('POST', `/v1/snapshots/${burstSnapshots[2]}/restore`, {}));
  await succeeded(restoreOld);
  expect(dataFile().equals(before)).toBe(true);
  const restoreNew = await submitted(await api.call('POST', `/v1/snapshots/${later.snapshotId}/restore`, {}));
  await succeeded(restoreNew);
  expect(dataFile().equals(after)).toBe(true);

  await expectConsistent(stack, [accountId], [pauseOp, ...burst, whilePaused.op.id, later.op.id, restoreOld, restoreNew]);
  if (process.env.CAGED_RECORD_HISTORY) fs.writeFileSync(process.env.CAGED_RECORD_HISTORY, historyJson(server.address, wfId, firstRun));
}, 240_000);
