import { ActivityCancellationType, isCancellation, proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { CatalogActivities, HostControlActivities, HostDataActivities, StoreDataActivities } from '../activities/index.js';

const SHORT_STEP = {
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '10 minutes',
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '20 seconds' },
} as const;

/**
 * Catalog and object-store steps: short, idempotent, retried with backoff for up to ten minutes.
 * They run as local activities, in the worker that runs the workflow and within its workflow task:
 * an operation makes several of them, and as ordinary activities each would cost a round trip
 * through the server (~25 ms). Only short steps are in this type: a data mover cannot be proxied here.
 */
export const localCatalog = proxyLocalActivities<CatalogActivities>(SHORT_STEP);
/** What operation workflows use. */
export const catalog = localCatalog;

/**
 * Deleting an object: the store retries transient errors itself for up to CAGED_STORAGE_RETRY_S
 * (180 s by default), so one attempt may take that long; permanent errors fail at once. Two
 * attempts bound a compensation or clean-up that cannot reach the store.
 */
export const objectStore = proxyLocalActivities<Pick<CatalogActivities, 'deleteObject' | 'deleteSnapshotObjects'>>({
  startToCloseTimeout: '10 minutes',
  scheduleToCloseTimeout: '21 minutes',
  retry: { initialInterval: '1 second', maximumAttempts: 2 },
});

/** Progress-only steps: two short attempts, then the operation goes on without them. */
const progressSteps = proxyLocalActivities<Pick<CatalogActivities, 'reportStep'>>({
  startToCloseTimeout: '5 seconds',
  scheduleToCloseTimeout: '12 seconds',
  retry: { initialInterval: '500 milliseconds', maximumAttempts: 2 },
});

/**
 * Records the step an operation is in. Best-effort: an unreachable catalog must not hold an
 * operation back, least of all one whose sandbox is stopped meanwhile (a swap, a rollback).
 */
export async function reportStep(operationId: string, step: string, bytesTotal?: number | null): Promise<void> {
  try {
    await progressSteps.reportStep(operationId, step, bytesTotal);
  } catch (err) {
    if (isCancellation(err)) throw err;
  }
}

/** The same steps as ordinary activities: the sandbox workflow before patch catalog-local-activities. */
export const remoteCatalog = proxyActivities<CatalogActivities>(SHORT_STEP);

/** A data mover that has not heartbeat for this long is taken for dead and retried elsewhere. */
export const DATA_HEARTBEAT_TIMEOUT_MS = 15_000;

const DATA_MOVER = {
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: DATA_HEARTBEAT_TIMEOUT_MS,
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 5 },
} as const;

/**
 * Steps on the sandbox's host. Data movers heartbeat their bytes: a dead worker is noticed within
 * the heartbeat timeout and the step is retried on another worker of the host's queue.
 */
export function hostActivities(taskQueue: string) {
  // Control steps heartbeat every second: a dead worker's step is retried within 10 s, not after
  // its 60 s start-to-close, while the sandbox may be stopped.
  const control = proxyActivities<HostControlActivities>({ taskQueue, ...SHORT_STEP, startToCloseTimeout: '60 seconds', heartbeatTimeout: '10 seconds' });
  const data = proxyActivities<HostDataActivities>({ taskQueue, ...DATA_MOVER });
  return { control, data };
}

/** Store-to-store data movers (export, import) on the shared queue; they heartbeat their bytes. */
export const sharedData = proxyActivities<StoreDataActivities>(DATA_MOVER);
