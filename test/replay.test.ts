import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, inject } from 'vitest';
import { bundleWorkflowCode, DefaultLogger, Runtime } from '@temporalio/worker';
import { historyFiles, replayHistoryFiles } from '../src/replay/replay-histories.js';
import { OPERATIONS } from '../src/workflows/registry.js';

/** The workflow type of every operation type, from the one table that declares them. */
const OPERATION_WORKFLOWS = Object.values(OPERATIONS).map((d) => d.workflow.name);

Runtime.install({ logger: new DefaultLogger('WARN') });
const HISTORIES = path.join(import.meta.dirname, 'histories');
const HISTORY_COUNT = 29;

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
    expect(types).toEqual(['sandboxWorkflow', ...OPERATION_WORKFLOWS].sort());
  });

  it('every history replays on the current workflow code', async () => {
    const outcomes = await replayHistoryFiles(historyFiles([HISTORIES]), { code: inject('workflowCode') });
    expect(outcomes.filter((o) => o.error)).toEqual([]);
    expect(outcomes).toHaveLength(HISTORY_COUNT);
  });

  it('keeps only histories that went through the deprecated patches of their workflow type', () => {
    // Histories recorded before a deprecated patch were removed with its old branch: the code no
    // longer takes that branch, so replaying them would fail (patches.ts states the rule).
    const deprecated: Record<string, string[]> = {
      createSnapshotWorkflow: ['catalog-local-activities', 'snapshot-in-one-host-step'],
      pauseWorkflow: ['catalog-local-activities', 'snapshot-in-one-host-step'],
      restoreWorkflow: ['catalog-local-activities', 'discard-root-after-success'],
      forkWorkflow: ['catalog-local-activities', 'discard-root-after-success'],
      deleteSnapshotWorkflow: ['catalog-local-activities'],
      deleteSandboxWorkflow: ['catalog-local-activities'],
      resumeWorkflow: ['catalog-local-activities'],
      exportWorkflow: ['catalog-local-activities'],
      importWorkflow: ['catalog-local-activities'],
    };
    for (const file of historyFiles([HISTORIES])) {
      const type = path.basename(file, '.json').split('.')[0]!;
      for (const id of deprecated[type] ?? []) expect(patchesOf(file), `${path.basename(file)} lacks ${id}`).toContain(id);
    }
  });

  it('covers both sides of the commit-points-and-deadlines patch', () => {
    // Every operation type has a history recorded after the patch, and one before it.
    for (const type of OPERATION_WORKFLOWS) {
      expect(patchesOf(path.join(HISTORIES, `${type}.commit-points-and-deadlines.json`)), type).toContain('commit-points-and-deadlines');
      const before = ['createSnapshotWorkflow', 'pauseWorkflow'].includes(type) ? 'snapshot-in-one-host-step' : 'catalog-local-activities';
      expect(patchesOf(path.join(HISTORIES, `${type}.${before}.json`)), type).not.toContain('commit-points-and-deadlines');
    }
    // After: the replaced root is still retired, and a restore's deadline timer is in its history.
    const restoreAfter = fs.readFileSync(path.join(HISTORIES, 'restoreWorkflow.commit-points-and-deadlines.json'), 'utf8');
    expect(restoreAfter).toContain('"retireRoot"');
    expect(restoreAfter).toContain('EVENT_TYPE_TIMER_STARTED');
  });

  it('a change that breaks running workflows is caught', async () => {
    const bundle = await bundleWorkflowCode({ workflowsPath: path.join(import.meta.dirname, 'support/nondeterministic-workflows.ts') });
    const [outcome] = await replayHistoryFiles([path.join(HISTORIES, 'createSnapshotWorkflow.commit-points-and-deadlines.json')], bundle);
    expect(outcome!.error).toMatch(/[Nn]ondetermin/);
  }, 120_000);
});
