import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { ActivityDeps } from '../activities/deps.js';
import { createHostActivities, createSharedActivities } from '../activities/index.js';
import { hostTaskQueue } from '../shared/definitions.js';
import { bundleWorkflowsInChild } from './workflow-bundle.js';

/**
 * Heartbeats reach the server at least this often (the SDK's default is 80% of the heartbeat
 * timeout, 12 s). An activity learns of its cancellation only from a heartbeat's answer, so this
 * bounds how long a cancelled upload keeps running.
 */
const HEARTBEAT_FLUSH = '1 second';

export interface WorkerSetup {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  hostId: string;
  /** A pre-built bundle (tests build one per run); otherwise a child process bundles the workflows. */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** Serve only the host queue (a host that runs sandboxes but not workflows). */
  hostOnly?: boolean;
}

/**
 * Two workers in one process: the shared queue (workflows, catalog and store activities) and this
 * host's queue (activities on the sandboxes that live here). More hosts mean more processes.
 */
export async function createWorkers(deps: ActivityDeps, s: WorkerSetup): Promise<Worker[]> {
  const workers: Worker[] = [];
  if (!s.hostOnly) {
    workers.push(
      await Worker.create({
        connection: s.connection,
        namespace: s.namespace,
        taskQueue: s.taskQueue,
        workflowBundle: s.workflowBundle ?? (await bundleWorkflowsInChild()),
        activities: createSharedActivities(deps),
        maxHeartbeatThrottleInterval: HEARTBEAT_FLUSH,
      }),
    );
  }
  workers.push(
    await Worker.create({
      connection: s.connection,
      namespace: s.namespace,
      taskQueue: hostTaskQueue(s.taskQueue, s.hostId),
      activities: createHostActivities(deps),
      maxConcurrentActivityTaskExecutions: 8,
      maxHeartbeatThrottleInterval: HEARTBEAT_FLUSH,
    }),
  );
  return workers;
}

/** Runs the workers until one stops; shutting one down stops them all. */
export async function runWorkers(workers: Worker[]): Promise<void> {
  try {
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
  }
}
