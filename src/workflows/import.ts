import { CancellationScope, patched } from '@temporalio/workflow';
import type { ImportInput } from '../shared/definitions.js';
import { catalog, objectStore, reportStep, sharedData } from './activities.js';
import { runOperation } from './operation.js';
import { OBJECT_LAYOUT } from './patches.js';
import { layout } from '../storage/layout.js';

/**
 * The API validated the upload and reserved the snapshot; this converts it to the snapshot format.
 * The uploaded copy is removed whatever happens.
 */
export async function importWorkflow(input: ImportInput) {
  return runOperation(input.operationId, async (saga) => {
    // The key the API's reservation recorded; before the patch, the key of the archive format.
    const objectKey = patched(OBJECT_LAYOUT) ? await catalog.snapshotObjectKey(input.snapshotId) : layout.archive(input.sandboxId, input.snapshotId);
    saga.add('mark snapshot failed', (why) => catalog.markSnapshotFailed(input.snapshotId, why.code, why.message));
    saga.add('delete partial object', () => objectStore.deleteObject(objectKey));
    saga.add('delete upload', () => objectStore.deleteObject(input.stagingKey));
    await reportStep(input.operationId, 'converting');
    const { sizeBytes, sha256 } = await sharedData.convertImport({
      operationId: input.operationId,
      snapshotId: input.snapshotId,
      stagingKey: input.stagingKey,
      objectKey,
      step: 'converting',
    });
    // Not cancelled mid-commit: the saga would delete a ready snapshot's object.
    await CancellationScope.nonCancellable(() => catalog.markSnapshotReady(input.snapshotId, sizeBytes, sha256));
    // Commit point: the snapshot is ready; removing the upload is clean-up.
    saga.commit();
    saga.afterSuccess('delete upload', () => objectStore.deleteObject(input.stagingKey));
    return { snapshot_id: input.snapshotId, size_bytes: sizeBytes, sha256 };
  }, input.deadlineSeconds);
}
