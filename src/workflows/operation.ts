import { ApplicationFailure, CancellationScope, CancelledFailure, condition, deprecatePatch, isCancellation, log } from '@temporalio/workflow';
import { catalog, reportStep } from './activities.js';
import { describeFailure, type FailureInfo } from './failure.js';
import { Saga } from './saga.js';
import { COMMIT_POINTS } from './patches.js';

/** Used when the request carries no deadline (requests queued before deadlines existed). */
const DEFAULT_DEADLINE_S = 2 * 3600;

/**
 * Runs one operation: on success its result is recorded; on failure or cancellation its saga rolls
 * back and the failure is recorded with its code. The workflow then fails (or is cancelled) too,
 * so the Temporal UI and the catalog agree. An operation still running at its deadline is
 * cancelled, rolled back and recorded as failed with `deadline_exceeded`.
 */
export async function runOperation<T>(
  operationId: string,
  body: (saga: Saga) => Promise<T>,
  deadlineSeconds?: number,
): Promise<T> {
  const saga = new Saga();
  // Where the patch's marker was first recorded in every operation workflow.
  deprecatePatch(COMMIT_POINTS);
  let expired = false;
  try {
    const result = await runWithDeadline((deadlineSeconds ?? DEFAULT_DEADLINE_S) * 1000, () => body(saga), () => (expired = true));
    await CancellationScope.nonCancellable(() => catalog.finishOperation(operationId, { status: 'succeeded', result }));
    // The operation has succeeded whatever happens here; a failed clean-up only leaves garbage behind.
    const cleanupFailed = await saga.cleanUp();
    if (cleanupFailed.length) log.error('clean-up after success failed', { operationId, cleanupFailed });
    return result;
  } catch (err) {
    // A cancel can surface as the failure of the step it interrupted; the request is what counts.
    const cancelled = !expired && (isCancellation(err) || CancellationScope.current().consideredCancelled);
    const why: FailureInfo = expired
      ? { code: 'deadline_exceeded', message: `the operation did not finish within its deadline of ${deadlineSeconds ?? DEFAULT_DEADLINE_S} s and was rolled back` }
      : cancelled
        ? { code: 'cancelled', message: 'the operation was cancelled' }
        : describeFailure(err);
    if (saga.hasCompensations()) {
      await CancellationScope.nonCancellable(() => reportStep(operationId, 'rolling_back'));
    }
    const undoFailed = await saga.compensate(why);
    if (undoFailed.length) log.error('compensations failed', { operationId, undoFailed });
    const message = undoFailed.length ? `${why.message} (rollback steps failed: ${undoFailed.join(', ')})` : why.message;
    await CancellationScope.nonCancellable(() =>
      catalog.finishOperation(operationId, {
        status: cancelled ? 'cancelled' : 'failed',
        error: { code: why.code, message },
      }),
    );
    // The workflow fails (not cancelled) with the same code, so Temporal and the catalog agree.
    if (expired) throw ApplicationFailure.create({ type: why.code, message: why.message, nonRetryable: true });
    throw err;
  }
}

/**
 * Runs fn in a scope that is cancelled when the deadline passes; fn's steps see an ordinary
 * cancellation, so data movers stop and the saga rolls back as for a cancel.
 */
async function runWithDeadline<T>(ms: number, fn: () => Promise<T>, onExpired: () => void): Promise<T> {
  const scope = new CancellationScope();
  let done = false;
  // Not cancellable: a cancel of the operation ends it through fn, and the watch with it.
  const watch = CancellationScope.nonCancellable(async () => {
    if (await condition(() => done, ms)) return;
    onExpired();
    scope.cancel();
  });
  try {
    return await scope.run(fn);
  } finally {
    done = true;
    await watch;
  }
}

/**
 * Throws the cancellation now if the operation was cancelled (or ran past its deadline) while a
 * step that cannot be interrupted ran; used before a commit point, so such a cancel still rolls back.
 */
export function throwIfCancelled(): void {
  if (CancellationScope.current().consideredCancelled) throw new CancelledFailure('the operation was cancelled');
}
