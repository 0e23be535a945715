import type { ChildProcess } from 'node:child_process';
import { expect } from 'vitest';
import { startStack, type TestStack } from './stack.js';
import { killAllChildren, startApiProcess, startWorkerProcess, type Services } from './processes.js';
import { apiClient } from './http.js';
import type { PrivatePostgres } from './private-postgres.js';
import { sleep } from './wait.js';

export interface OutageStack {
  stack: TestStack;
  /** `caged api` as a process of its own, so a crash shows as a dead process. */
  apiProc: { child: ChildProcess; url: string };
  worker: ChildProcess;
  /** A fresh account's client of apiProc. */
  api: ReturnType<typeof apiClient>;
}

/**
 * A stack without in-process workers (S3 store, PostgreSQL catalog) on `services`, with `caged api`
 * and a worker as processes of their own. If a step fails, what was started is stopped before the
 * error is thrown: the caller's afterAll never sees a half-made stack.
 */
export async function startOutageStack(name: string, services: Services, workerEnv?: Record<string, string>): Promise<OutageStack> {
  const stack = await startStack({ store: 's3', catalog: 'postgres', ...services, workers: false });
  try {
    const apiProc = await startApiProcess(stack, name, services);
    const worker = await startWorkerProcess(stack, name, { ...services, env: workerEnv });
    const api = apiClient(apiProc.url, (await stack.newAccount()).apiKey);
    return { stack, apiProc, worker, api };
  } catch (err) {
    await killAllChildren();
    await stack.close();
    throw err;
  }
}

/** Ends a PostgreSQL outage test: a cluster a failed test left stopped is started again so the stack can close, then removed. */
export async function closePostgresOutage(pg: PrivatePostgres | undefined, stack: TestStack | undefined): Promise<void> {
  await killAllChildren();
  if (pg && !(await pg.running())) await pg.start().catch(() => {});
  await stack?.close();
  await pg?.destroy();
}

/** Polls the operation until its upload has moved `bytes`; meanwhile it must be running. */
export async function waitForUpload(api: ReturnType<typeof apiClient>, opId: string, bytes: number): Promise<void> {
  for (const deadline = Date.now() + 60_000; ; ) {
    const r = await api.call('GET', `/v1/operations/${opId}`);
    if (r.body.progress?.step === 'uploading' && r.body.progress.bytes_done >= bytes) break;
    expect(r.body.status, JSON.stringify(r.body)).toBe('running');
    if (Date.now() > deadline) throw new Error(`the upload did not get going: ${JSON.stringify(r.body)}`);
    await sleep(100);
  }
}
