import { execFileSync } from 'node:child_process';
import { temporalCliPath } from '../runtime/tools.js';
import fs from 'node:fs';
import path from 'node:path';
import { Worker, type WorkerOptions } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import { WORKFLOWS_PATH } from '../app/workflow-bundle.js';

export interface ReplayOutcome {
  file: string;
  workflowType?: string;
  error?: string;
}

/** JSON history files under the given paths (files or directories, searched recursively). */
export function historyFiles(paths: string[]): string[] {
  const out: string[] = [];
  const visit = (p: string) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const name of fs.readdirSync(p).sort()) visit(path.join(p, name));
    else if (p.endsWith('.json')) out.push(p);
  };
  for (const p of paths) visit(p);
  return out;
}

function workflowTypeOf(json: { events?: { workflowExecutionStartedEventAttributes?: { workflowType?: { name?: string } } }[] }): string | undefined {
  return json.events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name;
}

/**
 * Replays histories (as `temporal workflow show --output json` writes them) against the current
 * workflow code. Any non-determinism shows up as an error for that file.
 */
export async function replayHistoryFiles(files: string[], bundle?: WorkerOptions['workflowBundle']): Promise<ReplayOutcome[]> {
  const outcomes = await replayHistories(
    files.map((file) => ({ id: file, json: JSON.parse(fs.readFileSync(file, 'utf8')) })),
    bundle,
  );
  return outcomes.map(({ id, ...o }) => ({ file: id, ...o }));
}

/** The same for histories in memory (an operation's, fetched through the API), each under an id of the caller's. */
export async function replayHistories(
  entries: { id: string; json: unknown }[],
  bundle?: WorkerOptions['workflowBundle'],
): Promise<{ id: string; workflowType?: string; error?: string }[]> {
  const parsed = entries.map((e) => ({ ...e, workflowType: workflowTypeOf(e.json as Parameters<typeof workflowTypeOf>[0]) }));
  const histories = parsed.map((p) => ({ workflowId: p.id, history: historyFromJSON(p.json) }));
  const options = bundle ? { workflowBundle: bundle } : { workflowsPath: WORKFLOWS_PATH };
  const outcomes: { id: string; workflowType?: string; error?: string }[] = [];
  for await (const result of Worker.runReplayHistories(options, histories)) {
    const p = parsed.find((x) => x.id === result.workflowId)!;
    outcomes.push({ id: p.id, workflowType: p.workflowType, ...(result.error ? { error: String(result.error.message ?? result.error) } : {}) });
  }
  return outcomes;
}

/**
 * The history of one run as `temporal workflow show --output json` writes it: what an operator
 * would export, and what `npm run replay` and test/replay.test.ts read.
 */
export function historyJson(address: string, workflowId: string, runId: string): Buffer {
  return execFileSync(temporalCliPath(), ['workflow', 'show', '--address', address, '-w', workflowId, '-r', runId, '--output', 'json'], {
    maxBuffer: 64 * 1024 * 1024,
  });
}
