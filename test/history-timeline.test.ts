import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import { historyTimeline, type HistoryEvent, type PendingActivity } from '../src/service/timeline/history-timeline.js';
import { findingsTable, formatDuration, timelineTable } from '../src/cli/format.js';

const HISTORIES = path.join(import.meta.dirname, 'histories');
const load = (name: string) => JSON.parse(fs.readFileSync(path.join(HISTORIES, name), 'utf8'));
/** A history from before the deprecated patches (every step a remote activity): a fixture for the mapping, not replayed. */
const loadFixture = (name: string) => JSON.parse(fs.readFileSync(path.join(import.meta.dirname, 'fixtures', name), 'utf8'));
const events = (json: unknown) => (historyFromJSON(json).events ?? []) as HistoryEvent[];

describe('historyTimeline over recorded histories', () => {
  it('names the steps of remote reportStep activities and lists each activity once, in order', () => {
    const t = historyTimeline(events(loadFixture('createSnapshotWorkflow.remote-activities.json')));
    expect(t).toMatchObject({ workflow_type: 'createSnapshotWorkflow', status: 'completed' });
    expect(t.entries.filter((e) => e.kind === 'step').map((e) => e.name)).toEqual(['reserving', 'quiescing', 'uploading', 'finalizing']);
    expect(t.entries.filter((e) => e.kind === 'activity').map((e) => e.name)).toEqual([
      'reserveSnapshot',
      'getSandboxState',
      'quiesceSandbox',
      'uploadSnapshot',
      'resumeSandbox',
      'markSnapshotReady',
      'finishOperation',
    ]);
    for (const e of t.entries.filter((x) => x.kind === 'activity')) {
      expect(e).toMatchObject({ status: 'completed', attempts: 1, failures: [] });
      expect(e.duration_ms).toBeGreaterThanOrEqual(0);
    }
  });

  it('decodes local activities from their markers, with durations that are never negative', () => {
    const t = historyTimeline(events(loadFixture('createSnapshotWorkflow.snapshot-in-one-host-step.json')));
    expect(t.entries.map((e) => `${e.kind}:${e.name}`)).toEqual([
      'local_activity:beginSnapshot',
      'activity:snapshotSandbox',
      'local_activity:markSnapshotReady',
      'local_activity:finishOperation',
    ]);
    expect(t.entries.every((e) => e.duration_ms !== undefined && e.duration_ms >= 0 && e.duration_ms < 5000)).toBe(true);
  });

  it("reads an attempt's number and the previous attempt's failure from the started event, the last from the failed one", () => {
    const json = loadFixture('createSnapshotWorkflow.snapshot-in-one-host-step.json');
    const started = json.events.find((e: Record<string, unknown>) => e.activityTaskStartedEventAttributes);
    Object.assign(started.activityTaskStartedEventAttributes, {
      attempt: 3,
      lastFailure: { message: 'disk on fire', applicationFailureInfo: { type: 'injected_fault' } },
    });
    const completed = json.events.findIndex((e: Record<string, unknown>) => e.activityTaskCompletedEventAttributes);
    const { scheduledEventId, startedEventId } = json.events[completed].activityTaskCompletedEventAttributes;
    const { activityTaskCompletedEventAttributes: _done, ...rest } = json.events[completed];
    json.events[completed] = {
      ...rest,
      eventType: 'EVENT_TYPE_ACTIVITY_TASK_FAILED',
      activityTaskFailedEventAttributes: {
        scheduledEventId,
        startedEventId,
        failure: { message: 'activity StartToClose timeout', timeoutFailureInfo: { timeoutType: 'TIMEOUT_TYPE_HEARTBEAT' }, cause: { message: 'still uploading' } },
      },
    };
    const upload = historyTimeline(events(json)).entries.find((e) => e.name === 'snapshotSandbox')!;
    expect(upload).toMatchObject({ status: 'failed', attempts: 3 });
    expect(upload.failures).toEqual([
      { attempt: 2, type: 'injected_fault', message: 'disk on fire' },
      { attempt: 3, message: 'activity StartToClose timeout (heartbeat): still uploading' },
    ]);
  });

  it("completes an activity still running from the pending activity's attempt and last failure", () => {
    const json = loadFixture('createSnapshotWorkflow.snapshot-in-one-host-step.json');
    const scheduled = json.events.findIndex((e: Record<string, unknown>) => e.activityTaskScheduledEventAttributes);
    const open = events({ events: json.events.slice(0, scheduled + 1) });
    const pending = [{ activityId: '2', attempt: 4, lastFailure: { message: 'S3 503' } }] as PendingActivity[];
    const t = historyTimeline(open, pending);
    expect(t.status).toBe('running');
    expect(t.entries.at(-1)).toMatchObject({ name: 'snapshotSandbox', status: 'running', attempts: 4, failures: [{ attempt: 3, message: 'S3 503' }] });
  });
});

describe('the CLI renderers', () => {
  it('formatDuration', () => {
    expect([0, 850, 2345, 65_000, 600_000].map(formatDuration)).toEqual(['0 ms', '850 ms', '2.3 s', '1m 05s', '10m 00s']);
  });

  it('timelineTable aligns rows and puts each failed attempt under its activity', () => {
    const text = timelineTable({
      status: 'completed',
      started_at: '2026-01-01T00:00:00.000Z',
      entries: [
        { kind: 'step', name: 'exporting', status: 'recorded', started_at: '2026-01-01T00:00:00.010Z', failures: [] },
        {
          kind: 'activity',
          name: 'exportArchive',
          status: 'completed',
          attempts: 2,
          started_at: '2026-01-01T00:00:00.020Z',
          duration_ms: 1500,
          failures: [{ attempt: 1, type: 'storage_unavailable', message: 'S3 503' }],
        },
      ],
    });
    expect(text.split('\n')).toEqual([
      'AT      KIND      NAME           STATUS     ATTEMPTS  DURATION',
      '+10 ms  step      exporting',
      '+20 ms  activity  exportArchive  completed  2         1.5 s',
      '    attempt 1 failed: storage_unavailable: S3 503',
      'workflow: completed',
    ]);
  });

  it('findingsTable says what --repair did or would do', () => {
    const text = findingsTable([
      { check: 'orphan_object', subject: 'exports/snap-1.tar.gz', detail: 'no snapshot', repairable: true },
      { check: 'orphan_upload', subject: 'snapshots/c/snap-2.tar.zst', detail: 'x', repairable: true, repaired: true },
      { check: 'snapshot_object_missing', subject: 'snap-3', detail: 'gone', repairable: false },
    ]);
    expect(text.split('\n').map((l) => l.split(/ {2,}/).slice(0, 3))).toEqual([
      ['CHECK', 'SUBJECT', 'REPAIR'],
      ['orphan_object', 'exports/snap-1.tar.gz', 'repairable'],
      ['orphan_upload', 'snapshots/c/snap-2.tar.zst', 'repaired'],
      ['snapshot_object_missing', 'snap-3', 'no'],
    ]);
  });
});
