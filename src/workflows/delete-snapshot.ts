import type { DeleteSnapshotInput } from '../shared/definitions.js';
import { catalog, reportStep } from './activities.js';
import { runOperation } from './operation.js';
import { deleteSnapshotData } from './snapshot-steps.js';

export async function deleteSnapshotWorkflow(input: DeleteSnapshotInput): Promise<{ snapshot_id: string }> {
  return runOperation(input.operationId, async () => {
    await reportStep(input.operationId, 'deleting');
    await deleteSnapshotData(input.snapshotId, input.operationId);
    return { snapshot_id: input.snapshotId };
  }, input.deadlineSeconds);
}
