import type { CreateSnapshotInput, SnapshotResult } from '../shared/definitions.js';
import { runOperation } from './operation.js';
import { takeSnapshot } from './snapshot-steps.js';

export async function createSnapshotWorkflow(input: CreateSnapshotInput): Promise<SnapshotResult> {
  return runOperation(input.operationId, (saga) => takeSnapshot({ ...input, resumeAfter: !input.keepPaused }, saga), input.deadlineSeconds);
}
