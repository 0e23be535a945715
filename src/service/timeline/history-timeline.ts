import type { WorkflowExecutionDescription, WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';

type History = Awaited<ReturnType<WorkflowHandle['fetchHistory']>>;
export type HistoryEvent = NonNullable<History['events']>[number];
export type PendingActivity = NonNullable<WorkflowExecutionDescription['raw']['pendingActivities']>[number];
type Failure = NonNullable<NonNullable<HistoryEvent['activityTaskFailedEventAttributes']>['failure']>;
type Payloads = { payloads?: { metadata?: Record<string, Uint8Array> | null; data?: Uint8Array | null }[] | null } | null | undefined;

export interface AttemptFailure {
  /** The attempt that failed, when the history says (a retried activity keeps only its last two failures). */
  attempt?: number;
  message: string;
  type?: string;
}

export interface TimelineEntry {
  /** activity: on a task queue, with retries on the server; local_activity: run inside the workflow task (catalog steps). */
  kind: 'activity' | 'local_activity' | 'step' | 'event';
  name: string;
  status: 'running' | 'completed' | 'failed' | 'timed_out' | 'cancelled' | 'recorded';
  /** The attempt that got furthest: 1 when it succeeded at once. */
  attempts?: number;
  started_at: string;
  ended_at?: string;
  duration_ms?: number;
  failures: AttemptFailure[];
}

export interface Timeline {
  workflow_type?: string;
  status: string;
  started_at?: string;
  ended_at?: string;
  entries: TimelineEntry[];
  failure?: AttemptFailure;
}

/** Seconds arrive as a Long from the client, as a number or string from JSON histories and markers. */
const tsMs = (t: { seconds?: unknown; nanos?: number | null }) => {
  const s = t.seconds as { toNumber?: () => number } | number | string | null | undefined;
  const seconds = typeof s === 'object' && s?.toNumber ? s.toNumber() : Number(s ?? 0);
  return seconds * 1000 + Math.floor((t.nanos ?? 0) / 1e6);
};
const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
const timeOf = (e: HistoryEvent) => (e.eventTime ? tsMs(e.eventTime) : undefined);

function decode(payloads: Payloads): unknown[] {
  return (payloads?.payloads ?? []).map((p) => {
    try {
      return defaultPayloadConverter.fromPayload(p as never);
    } catch {
      return undefined;
    }
  });
}

/** temporal.api.enums.v1.TimeoutType, by number as the decoded protobuf carries it. */
const TIMEOUT_TYPES = ['timeout', 'start to close', 'schedule to start', 'schedule to close', 'heartbeat'];

/** The message of a failure and of its causes: a timeout's cause is the error the attempt last reported. */
function failureOf(f: Failure | null | undefined, attempt?: number): AttemptFailure | undefined {
  if (!f) return undefined;
  const parts: string[] = [];
  let type: string | undefined;
  for (let c: Failure | null | undefined = f, depth = 0; c && depth < 5; c = c.cause, depth++) {
    if (c.timeoutFailureInfo) parts.push(`${c.message || 'timed out'} (${TIMEOUT_TYPES[Number(c.timeoutFailureInfo.timeoutType ?? 0)] ?? 'timeout'})`);
    else if (c.message) parts.push(c.message);
    type ??= c.applicationFailureInfo?.type || undefined;
  }
  return { ...(attempt === undefined ? {} : { attempt }), message: parts.join(': ') || 'failed', ...(type ? { type } : {}) };
}

const finish = (entry: TimelineEntry, endMs: number | undefined) => {
  if (endMs === undefined) return;
  entry.ended_at = iso(endMs);
  entry.duration_ms = Math.max(0, endMs - Date.parse(entry.started_at));
};

/**
 * An operation's workflow history as the steps and activities an operator reads, without the
 * Temporal UI. Remote activities come from their scheduled/started/closed events: the started event
 * is written when an attempt ends and carries that attempt's number and the previous attempt's
 * failure, the closing event the last failure. Catalog steps run as local activities and appear as
 * `core_local_activity` markers (type, final attempt, completion time, result, failure); their input
 * is not recorded, so a local `reportStep` is named by its result (the step). Activities still
 * open are completed from `describe()`'s pending activities (attempt, last failure).
 */
export function historyTimeline(events: HistoryEvent[], pending: PendingActivity[] = []): Timeline {
  const entries: TimelineEntry[] = [];
  const byScheduled = new Map<string, TimelineEntry & { activityId?: string }>();
  const timeline: Timeline = { status: 'running', entries };

  let taskStartedMs: number | undefined;
  let lastLocalEndMs: number | undefined;
  for (const e of events) {
    const at = timeOf(e);
    if (e.workflowTaskStartedEventAttributes) {
      taskStartedMs = at;
      lastLocalEndMs = undefined;
      continue;
    }
    const started = e.workflowExecutionStartedEventAttributes;
    if (started) {
      timeline.workflow_type = started.workflowType?.name ?? undefined;
      timeline.started_at = iso(at);
      continue;
    }
    const scheduled = e.activityTaskScheduledEventAttributes;
    if (scheduled) {
      const name = scheduled.activityType?.name ?? '?';
      const entry = { kind: 'activity' as const, name, status: 'running' as const, attempts: 1, started_at: iso(at) ?? '', failures: [], activityId: scheduled.activityId ?? undefined };
      // A remote reportStep (workflows that started before catalog steps ran locally) names its step.
      if (name === 'reportStep') {
        const step = decode(scheduled.input)[1];
        entries.push({ kind: 'step', name: typeof step === 'string' ? step : 'reportStep', status: 'recorded', started_at: entry.started_at, failures: [] });
      }
      byScheduled.set(String(e.eventId), entry);
      if (name !== 'reportStep') entries.push(entry);
      continue;
    }
    const taskStarted = e.activityTaskStartedEventAttributes;
    if (taskStarted) {
      const entry = byScheduled.get(String(taskStarted.scheduledEventId));
      if (!entry) continue;
      entry.attempts = taskStarted.attempt ?? 1;
      const previous = failureOf(taskStarted.lastFailure, entry.attempts - 1);
      if (previous) entry.failures.push(previous);
      continue;
    }
    const closed =
      (e.activityTaskCompletedEventAttributes && { how: 'completed' as const, a: e.activityTaskCompletedEventAttributes }) ||
      (e.activityTaskFailedEventAttributes && { how: 'failed' as const, a: e.activityTaskFailedEventAttributes }) ||
      (e.activityTaskTimedOutEventAttributes && { how: 'timed_out' as const, a: e.activityTaskTimedOutEventAttributes }) ||
      (e.activityTaskCanceledEventAttributes && { how: 'cancelled' as const, a: e.activityTaskCanceledEventAttributes });
    if (closed) {
      const entry = byScheduled.get(String(closed.a.scheduledEventId));
      if (!entry) continue;
      entry.status = closed.how;
      const failure = 'failure' in closed.a ? failureOf(closed.a.failure as Failure, entry.attempts) : undefined;
      if (failure) entry.failures.push(failure);
      finish(entry, at);
      continue;
    }
    const marker = e.markerRecordedEventAttributes;
    if (marker?.markerName === 'core_local_activity') {
      const data = decode(marker.details?.data as Payloads)[0] as
        | { activity_type?: string; attempt?: number; complete_time?: { seconds: number; nanos: number }; original_schedule_time?: { seconds: number; nanos: number } }
        | undefined;
      const name = data?.activity_type ?? '?';
      // The marker's original_schedule_time is not when it started (core sets it after completion);
      // catalog steps run one after another inside a workflow task, so each began when the task
      // started or the previous one completed.
      const end = data?.complete_time ? tsMs(data.complete_time) : at;
      const begin = Math.min(end ?? Infinity, Math.max(taskStartedMs ?? 0, lastLocalEndMs ?? 0)) || end;
      lastLocalEndMs = end;
      const failure = failureOf(marker.failure, data?.attempt);
      // reportStep returns its step, so a local one names it in its result (older histories hold null).
      const step = name === 'reportStep' ? decode(marker.details?.result as Payloads)[0] : undefined;
      const entry: TimelineEntry = {
        kind: name === 'reportStep' ? 'step' : 'local_activity',
        name: typeof step === 'string' ? step : name,
        status: failure ? 'failed' : name === 'reportStep' ? 'recorded' : 'completed',
        attempts: data?.attempt ?? 1,
        started_at: iso(begin) ?? '',
        failures: failure ? [failure] : [],
      };
      finish(entry, end);
      entries.push(entry);
      continue;
    }
    if (e.workflowExecutionCancelRequestedEventAttributes) {
      entries.push({ kind: 'event', name: 'cancel requested', status: 'recorded', started_at: iso(at) ?? '', failures: [] });
      continue;
    }
    const end =
      (e.workflowExecutionCompletedEventAttributes && { status: 'completed' }) ||
      (e.workflowExecutionFailedEventAttributes && { status: 'failed', failure: e.workflowExecutionFailedEventAttributes.failure }) ||
      (e.workflowExecutionTimedOutEventAttributes && { status: 'timed_out' }) ||
      (e.workflowExecutionCanceledEventAttributes && { status: 'cancelled' }) ||
      (e.workflowExecutionTerminatedEventAttributes && { status: 'terminated', reason: e.workflowExecutionTerminatedEventAttributes.reason }) ||
      (e.workflowExecutionContinuedAsNewEventAttributes && { status: 'continued_as_new' });
    if (end) {
      timeline.status = end.status;
      timeline.ended_at = iso(at);
      const failure = 'failure' in end ? failureOf(end.failure) : 'reason' in end && end.reason ? { message: end.reason } : undefined;
      if (failure) timeline.failure = failure;
    }
  }

  // Still open: the server knows the attempt in progress and what the previous one failed with.
  for (const p of pending) {
    const entry = [...byScheduled.values()].find((x) => x.activityId === p.activityId && x.status === 'running');
    if (!entry) continue;
    entry.attempts = Math.max(entry.attempts ?? 1, p.attempt ?? 1);
    const last = failureOf(p.lastFailure, (p.attempt ?? 1) - 1);
    if (last && !entry.failures.some((f) => f.attempt === last.attempt)) entry.failures.push(last);
  }
  for (const entry of byScheduled.values()) delete entry.activityId;
  return timeline;
}
