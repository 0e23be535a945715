import { CancellationScope, isCancellation, log } from '@temporalio/workflow';
import { catalog } from './activities.js';
import { describeFailure } from './failure.js';
import { Saga } from './saga.js';

/**
 * Runs one operation: on success its result is recorded; on failure or cancellation its saga rolls
 * back and the failure is recorded with its code. The workflow then fails (or is cancelled) too,
 * so the Temporal UI and the catalog agree.
 */
export async function runOperation<T>(operationId: string, body: (saga: Saga) => Promise<T>): Promise<T> {
  const saga = new Saga();
  try {
    const result = await body(saga);
    await CancellationScope.nonCancellable(() => catalog.finishOperation(operationId, { status: 'succeeded', result }));
    // The operation has succeeded whatever happens here; a failed clean-up only leaves garbage behind.
    const cleanupFailed = await saga.cleanUp();
    if (cleanupFailed.length) log.error('clean-up after success failed', { operationId, cleanupFailed });
    return result;
  } catch (err) {
    const why = describeFailure(err);
    const undoFailed = await saga.compensate(why);
    if (undoFailed.length) log.error('compensations failed', { operationId, undoFailed });
    const message = undoFailed.length ? `${why.message} (rollback steps failed: ${undoFailed.join(', ')})` : why.message;
    await CancellationScope.nonCancellable(() =>
      catalog.finishOperation(operationId, {
        status: isCancellation(err) ? 'cancelled' : 'failed',
        error: { code: why.code, message },
      }),
    );
    throw err;
  }
}
