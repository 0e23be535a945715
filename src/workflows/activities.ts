import { ActivityCancellationType, proxyActivities } from '@temporalio/workflow';
import type { HostActivities, SharedActivities } from '../activities/index.js';

/** Catalog and object-store steps: short, retried with backoff for up to ten minutes. */
export const catalog = proxyActivities<SharedActivities>({
  startToCloseTimeout: '30 seconds',
  scheduleToCloseTimeout: '10 minutes',
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '20 seconds' },
});

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
    heartbeatTimeout: '15 seconds',
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 5 },
  });
  return { control, data };
}

/** Store-to-store data movers (export, import) on the shared queue; they heartbeat their bytes. */
export const sharedData = proxyActivities<SharedActivities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '15 seconds',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 5 },
});
