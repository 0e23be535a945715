import { ActivityCancellationType, patched, proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { HostActivities, SharedActivities } from '../activities/index.js';

const CATALOG_OPTIONS = {
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '10 minutes',
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '20 seconds' },
} as const;

/** Patch id: catalog steps run as local activities. */
export const CATALOG_LOCAL_ACTIVITIES = 'catalog-local-activities';

const remoteCatalog = proxyActivities<SharedActivities>(CATALOG_OPTIONS);
const localCatalog = proxyLocalActivities<SharedActivities>(CATALOG_OPTIONS);

/**
 * Catalog and object-store steps: short, idempotent, retried with backoff for up to ten minutes.
 * They run as local activities, in the worker that runs the workflow and within its workflow task:
 * an operation makes several of them, and as ordinary activities each cost a round trip through
 * the server (~25 ms). Workflows that started before the patch replay their ordinary activities.
 */
export const catalog: typeof remoteCatalog = new Proxy({} as typeof remoteCatalog, {
  get: (_target, name: string) => (patched(CATALOG_LOCAL_ACTIVITIES) ? localCatalog : remoteCatalog)[name as keyof SharedActivities],
});

/** A data mover that has not heartbeat for this long is taken for dead and retried elsewhere. */
export const DATA_HEARTBEAT_TIMEOUT_MS = 15_000;

/**
 * Steps on the sandbox's host. Data movers heartbeat their bytes: a dead worker is noticed within
 * the heartbeat timeout and the step is retried on another worker of the host's queue.
 */
export function hostActivities(taskQueue: string) {
  const control = proxyActivities<HostActivities>({
    taskQueue,
    startToCloseTimeout: '60 seconds',
    scheduleToCloseTimeout: '10 minutes',
    retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '20 seconds' },
  });
  const data = proxyActivities<HostActivities>({
    taskQueue,
    startToCloseTimeout: '2 hours',
    heartbeatTimeout: DATA_HEARTBEAT_TIMEOUT_MS,
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 5 },
  });
  return { control, data };
}

/** Store-to-store data movers (export, import) on the shared queue; they heartbeat their bytes. */
export const sharedData = proxyActivities<SharedActivities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: DATA_HEARTBEAT_TIMEOUT_MS,
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 5 },
});
