import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';

export const GC_SCHEDULE_ID = 'caged-chunk-gc';

/**
 * The collector's Temporal Schedule: one pass every `intervalSeconds`, a pass still running makes
 * the next one skip (never two side by side). Made by every worker at start, so a fresh cluster
 * gets it; one that exists is updated to the configured interval.
 */
export async function ensureGcSchedule(client: Client, o: { taskQueue: string; intervalSeconds: number }): Promise<void> {
  const spec = { intervals: [{ every: `${o.intervalSeconds}s` }] };
  const action = { type: 'startWorkflow' as const, workflowType: 'gcWorkflow', taskQueue: o.taskQueue, args: [] as [] };
  try {
    await client.schedule.create({ scheduleId: GC_SCHEDULE_ID, spec, action, policies: { overlap: ScheduleOverlapPolicy.SKIP } });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    await client.schedule.getHandle(GC_SCHEDULE_ID).update((prev) => ({ ...prev, spec, action }));
  }
}
