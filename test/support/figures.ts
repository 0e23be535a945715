import fs from 'node:fs';
import path from 'node:path';
import { inject } from 'vitest';

/**
 * Records a measured figure of a fault test (seconds an operation stayed running after a fault,
 * bytes left behind, …) as a JSON line in the run's log directory, for the report of a run. Never an
 * assertion: the tests assert bounds; this keeps what they saw.
 */
export function recordFigure(name: string, value: number, detail: Record<string, unknown> = {}): void {
  fs.appendFileSync(path.join(inject('logDir'), 'figures.jsonl'), `${JSON.stringify({ name, value, ...detail, at: new Date().toISOString() })}\n`);
}
