import type { Config } from '../config.js';
import { OPERATIONS, type OperationType } from '../workflows/registry.js';

/**
 * Seconds an operation may run before it is cancelled and rolled back: a base plus an allowance per
 * GiB it may move, so a large restore is not cut short and a small one does not hang for hours.
 * A new snapshot's size is known only at its end: the largest allowed counts.
 */
export function operationDeadlineSeconds(config: Pick<Config, 'deadline' | 'limits'>, type: OperationType, snapshotBytes?: number): number {
  const moves = OPERATIONS[type].moves;
  const bytes = moves === 'the snapshot it reads' ? (snapshotBytes ?? config.limits.maxSnapshotBytes) : moves === 'a new snapshot' ? config.limits.maxSnapshotBytes : 0;
  return Math.ceil(config.deadline.baseSeconds + (bytes / 1024 ** 3) * config.deadline.secondsPerGiB);
}
