import {
  CancellationScope,
  ChildWorkflowCancellationType,
  ParentClosePolicy,
  condition,
  continueAsNew,
  executeChild,
  isCancellation,
  allHandlersFinished,
  patched,
  setHandler,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import {
  cancelOperationSignal,
  sandboxStatusQuery,
  submitOperationSignal,
  touchSignal,
  type OperationRequest,
  type SandboxWorkflowInput,
} from '../shared/definitions.js';
import { localCatalog, remoteCatalog } from './activities.js';
import { CATALOG_LOCAL_ACTIVITIES } from './patches.js';
import { operationSearchAttributes } from './search-attributes.js';
import { operationOf } from './registry.js';

/**
 * The one long-lived workflow of a sandbox. It runs the sandbox's operations one at a time, in the
 * order they arrived, as child workflows whose ids are the operation ids; and it keeps the idle
 * clock, pausing the sandbox (with its automatic snapshot) once it has been idle too long.
 */
export async function sandboxWorkflow(input: SandboxWorkflowInput): Promise<void> {
  const queue: OperationRequest[] = [...(input.queue ?? [])];
  let paused = input.paused;
  let lastActiveAt = input.lastActiveAt ?? Date.now();
  let current: { id: string; scope: CancellationScope } | undefined;

  setHandler(submitOperationSignal, (req) => {
    const id = req.input.operationId;
    if (current?.id === id || queue.some((q) => q.input.operationId === id)) return;
    queue.push(req);
  });
  setHandler(cancelOperationSignal, async (operationId) => {
    if (current?.id === operationId) {
      current.scope.cancel();
      return;
    }
    const i = queue.findIndex((q) => q.input.operationId === operationId);
    if (i < 0) return;
    const [req] = queue.splice(i, 1);
    // Recorded at once, not when the operation running ahead of it ends.
    await abandon(req!, 'cancelled', CANCELLED_BEFORE_START);
  });
  setHandler(touchSignal, ({ at }) => {
    if (at > lastActiveAt) lastActiveAt = at;
  });
  setHandler(sandboxStatusQuery, () => ({ running: current?.id, queued: queue.map((q) => q.input.operationId), paused }));

  for (;;) {
    const idleMs = input.idleTimeoutSeconds * 1000;
    if (input.deleted && queue.length === 0) {
      await condition(allHandlersFinished);
      return;
    }
    const idleClock = !paused && !input.deleted && idleMs > 0;
    const wait = idleClock ? Math.max(1, lastActiveAt + idleMs - Date.now()) : undefined;
    const woke = await condition(
      () => queue.length > 0 || workflowInfo().continueAsNewSuggested,
      wait as number,
    );

    if (!woke && idleClock && Date.now() >= lastActiveAt + idleMs) {
      queue.push(await idlePause(input));
    }

    const next = queue.shift();
    if (next) {
      const outcome = await runChild(next, (c) => (current = c));
      current = undefined;
      if (next.type === 'pause' && outcome === 'succeeded') paused = true;
      if (next.type === 'resume' && outcome === 'succeeded') {
        paused = false;
        lastActiveAt = Date.now();
      }
      // A deleted sandbox, or a fork that never became one, has nothing left to run.
      if ((next.type === 'delete_sandbox' && outcome === 'succeeded') || (next.type === 'fork' && outcome !== 'succeeded')) {
        for (const q of queue.splice(0)) await abandon(q, 'failed', { code: 'not_found', message: 'the sandbox was deleted' });
        await condition(allHandlersFinished);
        return;
      }
      continue;
    }

    if (workflowInfo().continueAsNewSuggested && queue.length === 0) {
      // A cancellation still being recorded would be lost.
      await condition(allHandlersFinished);
      await continueAsNew<typeof sandboxWorkflow>({ ...input, paused, queue, lastActiveAt });
    }
  }

  async function idlePause(inp: SandboxWorkflowInput): Promise<OperationRequest> {
    const operationId = `op-pause-idle-${uuid4().replace(/-/g, '').slice(0, 12)}`;
    const req: OperationRequest = {
      type: 'pause',
      input: {
        operationId,
        accountId: inp.accountId,
        hostQueue: inp.hostQueue,
        sandboxId: inp.sandboxId,
        reason: 'idle_timeout',
        ...(inp.pauseDeadlineSeconds ? { deadlineSeconds: inp.pauseDeadlineSeconds } : {}),
      },
    };
    await entityCatalog().recordOperation({ id: operationId, accountId: inp.accountId, type: 'pause', sandboxId: inp.sandboxId, input: req.input });
    return req;
  }
}

/**
 * Records the outcome of an operation that never ran, after releasing what its request reserved:
 * the API reserved a pending snapshot for a create_snapshot or import (and stored an import's
 * upload), which would otherwise stay pending, keep its name taken and count against the limits.
 */
async function abandon(req: OperationRequest, status: 'cancelled' | 'failed', error: { code: string; message: string }): Promise<void> {
  if (req.type === 'create_snapshot' || req.type === 'import') await entityCatalog().markSnapshotFailed(req.input.snapshotId, error.code, error.message);
  if (req.type === 'import') await entityCatalog().deleteObject(req.input.stagingKey);
  await entityCatalog().finishOperation(req.input.operationId, { status, error });
}

/**
 * Sandbox workflows live long, so the catalog-local-activities patch stays in its `patched` phase
 * here: one that started before it keeps running its catalog steps as ordinary activities.
 */
const entityCatalog = () => (patched(CATALOG_LOCAL_ACTIVITIES) ? localCatalog : remoteCatalog);

const CANCELLED_BEFORE_START = { code: 'cancelled', message: 'cancelled before it started' };

async function runChild(
  req: OperationRequest,
  onStart: (c: { id: string; scope: CancellationScope }) => void,
): Promise<'succeeded' | 'failed' | 'cancelled'> {
  const scope = new CancellationScope();
  onStart({ id: req.input.operationId, scope });
  try {
    await scope.run(() =>
      executeChild(operationOf(req).workflow, {
        workflowId: req.input.operationId,
        args: [req.input],
        cancellationType: ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED,
        parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
        typedSearchAttributes: operationSearchAttributes(req),
      }),
    );
    return 'succeeded';
  } catch (err) {
    // The child recorded its own outcome in the catalog; this loop only moves on.
    return isCancellation(err) ? 'cancelled' : 'failed';
  }
}
