import { WorkflowIdConflictPolicy } from '@temporalio/client';
import type { AppContext } from './context.js';
import type { OperationRow, SandboxRow } from '../catalog/schema.js';
import { finishOperation, insertOperation } from '../catalog/operations.js';
import { touchSandbox } from '../catalog/sandboxes.js';
import { discardReservation, getSnapshot } from '../catalog/snapshots.js';
import { GRPC_UNAVAILABLE, grpcStatus } from './workflow-errors.js';
import { operationDeadlineSeconds } from './deadline.js';
import {
  cancelOperationSignal,
  hostTaskQueue,
  sandboxWorkflowId,
  submitOperationSignal,
  touchSignal,
  type OperationRequest,
  type SandboxWorkflowInput,
} from '../shared/definitions.js';
import { sandboxWorkflow } from '../workflows/sandbox.js';
import { SA } from '../workflows/search-attributes.js';
import { newOperationId } from '../shared/ids.js';

export const hostQueueOf = (ctx: AppContext, sandbox: Pick<SandboxRow, 'host_id'>) =>
  hostTaskQueue(ctx.config.temporal.taskQueue, sandbox.host_id);

function entityStart(ctx: AppContext, sandbox: SandboxRow) {
  const input: SandboxWorkflowInput = {
    sandboxId: sandbox.id,
    accountId: sandbox.account_id,
    hostQueue: hostQueueOf(ctx, sandbox),
    idleTimeoutSeconds: sandbox.idle_timeout_s,
    paused: sandbox.state === 'paused',
    deleted: sandbox.state === 'deleted',
    lastActiveAt: sandbox.last_active_at.getTime(),
    pauseDeadlineSeconds: operationDeadlineSeconds(ctx.config, 'pause'),
  };
  return {
    workflowId: sandboxWorkflowId(sandbox.id),
    taskQueue: ctx.config.temporal.taskQueue,
    args: [input] as [SandboxWorkflowInput],
    typedSearchAttributes: [
      { key: SA.sandboxId, value: sandbox.id },
      { key: SA.accountId, value: sandbox.account_id },
    ],
  };
}

/** Starts the sandbox's own workflow unless it runs already. */
export async function ensureSandboxWorkflow(ctx: AppContext, sandbox: SandboxRow): Promise<void> {
  await ctx.temporal.workflow.start(sandboxWorkflow, {
    ...entityStart(ctx, sandbox),
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
  });
}

export type RequestOf<T extends OperationRequest['type']> = Extract<OperationRequest, { type: T }>;
type InputWithoutRef<T extends OperationRequest['type']> = Omit<RequestOf<T>['input'], 'operationId' | 'accountId' | 'hostQueue'>;

/**
 * Records the operation, then hands it to the sandbox's workflow, which runs the sandbox's
 * operations one at a time. The operation id is the child workflow's id.
 */
export async function submitOperation<T extends OperationRequest['type']>(
  ctx: AppContext,
  sandbox: SandboxRow,
  type: T,
  input: InputWithoutRef<T>,
  refs: { snapshotId?: string | null; operationId?: string } = {},
): Promise<OperationRow> {
  const operationId = refs.operationId ?? newOperationId(type.replace('_', '-'));
  const snapshotBytes = refs.snapshotId ? Number((await getSnapshot(ctx.db, refs.snapshotId))?.size_bytes ?? 0) : undefined;
  const fullInput = {
    ...input,
    operationId,
    accountId: sandbox.account_id,
    hostQueue: hostQueueOf(ctx, sandbox),
    deadlineSeconds: operationDeadlineSeconds(ctx.config, type, snapshotBytes),
  };
  const row = await insertOperation(ctx.db, {
    id: operationId,
    accountId: sandbox.account_id,
    type,
    sandboxId: sandbox.id,
    snapshotId: refs.snapshotId ?? null,
    input: fullInput,
  });
  try {
    await ctx.temporal.workflow.signalWithStart(sandboxWorkflow, {
      ...entityStart(ctx, sandbox),
      signal: submitOperationSignal,
      signalArgs: [{ type, input: fullInput } as unknown as OperationRequest],
    });
  } catch (err) {
    // UNAVAILABLE: the request never reached Temporal, so nothing will run it: the operation ends
    // failed and what the request reserved is released. (A timeout is ambiguous: the operation may
    // have been queued, and GET /v1/operations/{id} reconciles it.)
    if (grpcStatus(err) === GRPC_UNAVAILABLE) await refused(ctx, type, fullInput as { snapshotId?: string; stagingKey?: string }, operationId);
    throw err;
  }
  return row;
}

async function refused(ctx: AppContext, type: OperationRequest['type'], input: { snapshotId?: string; stagingKey?: string }, operationId: string): Promise<void> {
  const error = { code: 'unavailable', message: 'the workflow service could not be reached; the operation was not started' };
  if ((type === 'create_snapshot' || type === 'import') && input.snapshotId) await discardReservation(ctx.db, input.snapshotId);
  if (type === 'import' && input.stagingKey) await ctx.store.delete(input.stagingKey).catch(() => {});
  await finishOperation(ctx.db, operationId, { status: 'failed', error });
}

export async function cancelOperation(ctx: AppContext, sandboxId: string, operationId: string): Promise<void> {
  await ctx.temporal.workflow.getHandle(sandboxWorkflowId(sandboxId)).signal(cancelOperationSignal, operationId);
}

/** When each sandbox last signalled activity; bounded, oldest entries first out (a Map keeps insertion order). */
const lastTouch = new Map<string, number>();
const MAX_TOUCH_ENTRIES = 10_000;

/**
 * Files and exec count as activity: the catalog's last_active_at moves, and the sandbox's workflow
 * restarts its idle clock. Signals are rate-limited so busy sandboxes don't flood its history.
 */
export async function recordActivity(ctx: AppContext, sandbox: SandboxRow): Promise<void> {
  await touchSandbox(ctx.db, sandbox.id);
  if (sandbox.idle_timeout_s === 0 || sandbox.state === 'deleted') return;
  const now = Date.now();
  const every = Math.min(10_000, (sandbox.idle_timeout_s * 1000) / 4);
  if (now - (lastTouch.get(sandbox.id) ?? 0) < every) return;
  lastTouch.delete(sandbox.id);
  lastTouch.set(sandbox.id, now);
  if (lastTouch.size > MAX_TOUCH_ENTRIES) lastTouch.delete(lastTouch.keys().next().value!);
  await ctx.temporal.workflow
    .getHandle(sandboxWorkflowId(sandbox.id))
    .signal(touchSignal, { at: now })
    .catch((err) => ctx.log.warn({ err, sandboxId: sandbox.id }, 'could not signal activity'));
}
