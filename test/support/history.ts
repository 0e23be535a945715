import type { Client } from '@temporalio/client';

/**
 * The attempt that ended the first `activityType` activity of a closed workflow: Temporal writes an
 * activity's started event when it ends, with the attempt that got that far.
 */
export async function finalAttempt(client: Client, workflowId: string, activityType: string): Promise<number> {
  const events = (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
  const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === activityType);
  if (!scheduled) throw new Error(`${workflowId} scheduled no ${activityType}`);
  const started = events.find((e) => Number(e.activityTaskStartedEventAttributes?.scheduledEventId) === Number(scheduled.eventId));
  if (!started) throw new Error(`${workflowId}: ${activityType} never started`);
  return started.activityTaskStartedEventAttributes!.attempt ?? 0;
}
