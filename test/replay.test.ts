import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, inject } from 'vitest';
import { bundleWorkflowCode, DefaultLogger, Runtime } from '@temporalio/worker';
import { historyFiles, replayHistoryFiles } from '../src/replay/replay-histories.js';
import { OPERATIONS } from '../src/workflows/registry.js';
import * as workflows from '../src/workflows/index.js';

/** The workflow type of every operation type, from the one table that declares them. */
const OPERATION_WORKFLOWS = Object.values(OPERATIONS).map((d) => d.workflow.name);

Runtime.install({ logger: new DefaultLogger('WARN') });
const HISTORIES = path.join(import.meta.dirname, 'histories');
const HISTORY_COUNT = 24;

interface PatchMarker {
  id: string;
  deprecated: boolean;
}

/** The patches a recorded history went through (its core_patch markers), with their phase. */
function patchesOf(file: string): PatchMarker[] {
  const history = JSON.parse(fs.readFileSync(file, 'utf8')) as { events: { markerRecordedEventAttributes?: { markerName?: string; details?: Record<string, { payloads?: { data?: string }[] }> } }[] };
  const markers: PatchMarker[] = [];
  for (const e of history.events) {
    const m = e.markerRecordedEventAttributes;
    if (m?.markerName !== 'core_patch') continue;
    for (const v of Object.values(m.details ?? {})) {
      for (const p of v.payloads ?? []) {
        const decoded = Buffer.from(p.data ?? '', 'base64').toString('utf8');
        if (decoded.startsWith('{')) {
          const { id, deprecated } = JSON.parse(decoded) as { id: string; deprecated?: boolean };
          markers.push({ id, deprecated: !!deprecated });
        }
      }
    }
  }
  return markers;
}

const historyOf = (type: string, recordedAfter: string) => path.join(HISTORIES, `${type}.${recordedAfter}.json`);

describe('replay of recorded histories', () => {
  it('holds at least one history per workflow type the worker runs', () => {
    // <workflowType>.json, or <workflowType>.<patch>.json for a history recorded after a patch.
    const types = [...new Set(historyFiles([HISTORIES]).map((f) => path.basename(f, '.json').split('.')[0]))].sort();
    expect(types).toEqual(Object.keys(workflows).sort());
    expect(types).toEqual(expect.arrayContaining(['sandboxWorkflow', 'gcWorkflow', ...OPERATION_WORKFLOWS]));
  });

  it('every history replays on the current workflow code', async () => {
    const outcomes = await replayHistoryFiles(historyFiles([HISTORIES]), { code: inject('workflowCode') });
    expect(outcomes.filter((o) => o.error)).toEqual([]);
    expect(outcomes).toHaveLength(HISTORY_COUNT);
  });

  it('keeps no operation history that could take a removed branch (patches.ts states the rule)', () => {
    // The retired patches' calls are gone: a history that recorded one of them outside its
    // deprecated phase would no longer replay. Every operation history went through the
    // commit-points patch, whose old branches are removed.
    const retired = ['catalog-local-activities', 'discard-root-after-success', 'snapshot-in-one-host-step'];
    for (const file of historyFiles([HISTORIES])) {
      // Only operations run under runOperation, where those patches live.
      if (!OPERATION_WORKFLOWS.some((t) => path.basename(file).startsWith(`${t}.`))) continue;
      const markers = patchesOf(file);
      expect(markers.filter((m) => retired.includes(m.id) && !m.deprecated), path.basename(file)).toEqual([]);
      expect(markers.map((m) => m.id), path.basename(file)).toContain('commit-points-and-deadlines');
    }
  });

  it('covers both phases of the commit-points-and-deadlines patch and both sides of object-layout', () => {
    for (const type of OPERATION_WORKFLOWS) {
      // Recorded while the patch was `patched` (workflows open when the deprecation shipped), and after it.
      expect(patchesOf(historyOf(type, 'after-deprecations')), type).toContainEqual({ id: 'commit-points-and-deadlines', deprecated: false });
      expect(patchesOf(historyOf(type, 'object-layout')), type).toContainEqual({ id: 'commit-points-and-deadlines', deprecated: true });
    }
    // The workflows that object-layout changed: their history before it takes the old branch.
    for (const type of ['deleteSnapshotWorkflow', 'importWorkflow']) {
      expect(patchesOf(historyOf(type, 'object-layout')), type).toContainEqual({ id: 'object-layout', deprecated: false });
      expect(patchesOf(historyOf(type, 'after-deprecations')).map((m) => m.id), type).not.toContain('object-layout');
    }
    // The restore stages first, retires the replaced root, and its deadline timer is in its history.
    const restoreAfter = fs.readFileSync(historyOf('restoreWorkflow', 'object-layout'), 'utf8');
    expect(restoreAfter).toContain('"retireRoot"');
    expect(restoreAfter).toContain('EVENT_TYPE_TIMER_STARTED');
  });

  it('covers a sandbox workflow run that continued as new when Temporal suggested it', () => {
    type Event = { eventType?: string; workflowTaskStartedEventAttributes?: { suggestContinueAsNew?: boolean } };
    const { events } = JSON.parse(fs.readFileSync(historyOf('sandboxWorkflow', 'continue-as-new'), 'utf8')) as { events: Event[] };
    // Replaying its last event checks that the current code still continues as new at that point.
    expect(events.at(-1)?.eventType).toBe('EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW');
    expect(events.some((e) => e.workflowTaskStartedEventAttributes?.suggestContinueAsNew)).toBe(true);
  });

  it('a change that breaks running workflows is caught', async () => {
    const bundle = await bundleWorkflowCode({ workflowsPath: path.join(import.meta.dirname, 'support/nondeterministic-workflows.ts') });
    const [outcome] = await replayHistoryFiles([historyOf('createSnapshotWorkflow', 'object-layout')], bundle);
    expect(outcome!.error).toMatch(/[Nn]ondetermin/);
  }, 120_000);
});
