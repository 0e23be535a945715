import type { Config } from '../config.js';
import type { OperationType } from '../shared/definitions.js';

/** Operations whose bytes are the snapshot they read. */
const READS_SNAPSHOT: ReadonlySet<OperationType> = new Set(['restore', 'fork', 'export']);
/** Operations that write a snapshot whose size is known only at the end: the largest allowed. */
const WRITES_SNAPSHOT: ReadonlySet<OperationType> = new Set(['create_snapshot', 'pause', 'import']);

/**
 * Seconds an operation may run before it is cancelled and rolled back: a base plus an allowance per
 * GiB it may move, so a large restore is not cut short and a small one does not hang for hours.
 */
export function operationDeadlineSeconds(config: Pick<Config, 'deadline' | 'limits'>, type: OperationType, snapshotBytes?: number): number {
  const bytes = READS_SNAPSHOT.has(type) ? (snapshotBytes ?? config.limits.maxSnapshotBytes) : WRITES_SNAPSHOT.has(type) ? config.limits.maxSnapshotBytes : 0;
  return Math.ceil(config.deadline.baseSeconds + (bytes / 1024 ** 3) * config.deadline.secondsPerGiB);
}
