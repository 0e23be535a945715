import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, inject } from 'vitest';
import { bundleWorkflowCode, DefaultLogger, Runtime } from '@temporalio/worker';
import { historyFiles, replayHistoryFiles } from '../src/replay/replay-histories.js';
import { OPERATION_TYPES } from '../src/shared/definitions.js';

Runtime.install({ logger: new DefaultLogger('WARN') });
const HISTORIES = path.join(import.meta.dirname, 'histories');

/** The ids of the patches a recorded history went through (its core_patch markers). */
function patchesOf(file: string): string[] {
  const history = JSON.parse(fs.readFileSync(file, 'utf8')) as { events: { markerRecordedEventAttributes?: { markerName?: string; details?: Record<string, { payloads?: { data?: string }[] }> } }[] };
  const ids: string[] = [];
  for (const e of history.events) {
    const m = e.markerRecordedEventAttributes;
    if (m?.markerName !== 'core_patch') continue;
    for (const v of Object.values(m.details ?? {})) {
      for (const p of v.payloads ?? []) {
        const decoded = Buffer.from(p.data ?? '', 'base64').toString('utf8');
        if (decoded.startsWith('{')) ids.push((JSON.parse(decoded) as { id: string }).id);
      }
    }
  }
  return ids;
}

describe('replay of recorded histories', () => {
  it('holds at least one history per workflow type', () => {
    // <workflowType>.json, or <workflowType>.<patch>.json for a history recorded after a patch.
    const types = [...new Set(historyFiles([HISTORIES]).map((f) => path.basename(f, '.json').split('.')[0]))].sort();
    const expected = ['sandboxWorkflow', 'createSnapshotWorkflow', 'deleteSnapshotWorkflow', 'pauseWorkflow', 'resumeWorkflow', 'restoreWorkflow', 'forkWorkflow', 'exportWorkflow', 'importWorkflow', 'deleteSandboxWorkflow'].sort();
    expect(types).toEqual(expected);
    // Every operation type has its workflow among them.
    expect(OPERATION_TYPES.length + 1).toBe(expected.length);
  });

  it('every history replays on the current workflow code', async () => {
    const outcomes = await replayHistoryFiles(historyFiles([HISTORIES]), { code: inject('workflowCode') });
    expect(outcomes.filter((o) => o.error)).toEqual([]);
    expect(outcomes).toHaveLength(33);
  });

  it('covers both sides of the catalog-local-activities patch', () => {
    // Before: catalog steps are ordinary activities. After: local activities, recorded as markers.
    const operations = ['createSnapshotWorkflow', 'deleteSnapshotWorkflow', 'pauseWorkflow', 'resumeWorkflow', 'restoreWorkflow', 'forkWorkflow', 'exportWorkflow', 'importWorkflow', 'deleteSandboxWorkflow'];
    for (const type of operations) {
      const before = fs.readFileSync(path.join(HISTORIES, `${type}.json`), 'utf8');
      const after = fs.readFileSync(path.join(HISTORIES, `${type}.catalog-local-activities.json`), 'utf8');
      expect(before, type).toContain('"finishOperation"');
      expect(before, type).not.toContain('EVENT_TYPE_MARKER_RECORDED');
      expect(after, type).toContain('EVENT_TYPE_MARKER_RECORDED');
      expect(after, type).not.toMatch(/"activityType":\s*\{\s*"name":\s*"finishOperation"/);
    }
  });

  it('covers both sides of the discard-root-after-success patch', () => {
    // Recorded before the patch: the previous root is deleted by commitRoot. After: retired, then deleted by discardOldRoot.
    for (const type of ['restoreWorkflow', 'forkWorkflow']) {
      const before = fs.readFileSync(path.join(HISTORIES, `${type}.json`), 'utf8');
      const after = fs.readFileSync(path.join(HISTORIES, `${type}.discard-root-after-success.json`), 'utf8');
      const latest = fs.readFileSync(path.join(HISTORIES, `${type}.catalog-local-activities.json`), 'utf8');
      expect(latest).toContain('"retireRoot"');
      expect(before).toContain('"commitRoot"');
      expect(before).not.toContain('"retireRoot"');
      expect(after).toContain('"retireRoot"');
      expect(after).toContain('"discardOldRoot"');
      expect(after).not.toContain('"commitRoot"');
    }
  });

  it('covers both sides of the snapshot-in-one-host-step patch', () => {
    // Before: quiesce, upload and resume are three host activities. After: one, snapshotSandbox.
    for (const type of ['createSnapshotWorkflow', 'pauseWorkflow']) {
      const before = fs.readFileSync(path.join(HISTORIES, `${type}.catalog-local-activities.json`), 'utf8');
      const after = fs.readFileSync(path.join(HISTORIES, `${type}.snapshot-in-one-host-step.json`), 'utf8');
      expect(before, type).toContain('"uploadSnapshot"');
      expect(before, type).not.toContain('"snapshotSandbox"');
      expect(after, type).toContain('"snapshotSandbox"');
      expect(after, type).not.toContain('"uploadSnapshot"');
    }
    // A manual snapshot no longer quiesces and resumes in steps of their own; a pause still stops the sandbox first.
    const snapshotAfter = fs.readFileSync(path.join(HISTORIES, 'createSnapshotWorkflow.snapshot-in-one-host-step.json'), 'utf8');
    expect(snapshotAfter).not.toContain('"quiesceSandbox"');
    expect(snapshotAfter).not.toContain('"resumeSandbox"');
    expect(fs.readFileSync(path.join(HISTORIES, 'pauseWorkflow.snapshot-in-one-host-step.json'), 'utf8')).toContain('"quiesceSandbox"');
  });

  it('covers both sides of the commit-points-and-deadlines patch', () => {
    // Every operation type has a history recorded after the patch, and one before it.
    const operations = ['createSnapshotWorkflow', 'deleteSnapshotWorkflow', 'pauseWorkflow', 'resumeWorkflow', 'restoreWorkflow', 'forkWorkflow', 'exportWorkflow', 'importWorkflow', 'deleteSandboxWorkflow'];
    for (const type of operations) {
      expect(patchesOf(path.join(HISTORIES, `${type}.commit-points-and-deadlines.json`)), type).toContain('commit-points-and-deadlines');
      expect(patchesOf(path.join(HISTORIES, `${type}.catalog-local-activities.json`)), type).not.toContain('commit-points-and-deadlines');
    }
    // After: the replaced root is still retired, and a restore's deadline timer is in its history.
    const restoreAfter = fs.readFileSync(path.join(HISTORIES, 'restoreWorkflow.commit-points-and-deadlines.json'), 'utf8');
    expect(restoreAfter).toContain('"retireRoot"');
    expect(restoreAfter).toContain('EVENT_TYPE_TIMER_STARTED');
  });

  it('a change that breaks running workflows is caught', async () => {
    const bundle = await bundleWorkflowCode({ workflowsPath: path.join(import.meta.dirname, 'support/nondeterministic-workflows.ts') });
    const [outcome] = await replayHistoryFiles([path.join(HISTORIES, 'createSnapshotWorkflow.json')], bundle);
    expect(outcome!.error).toMatch(/[Nn]ondetermin/);
  }, 120_000);
});
