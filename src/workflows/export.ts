import type { ExportInput } from '../shared/definitions.js';
import { catalog, reportStep, sharedData } from './activities.js';
import { runOperation } from './operation.js';

/** A .tar.gz of the snapshot and a URL to fetch it; a repeated export reuses the archive. */
export async function exportWorkflow(input: ExportInput) {
  return runOperation(input.operationId, async () => {
    const snap = await catalog.claimSnapshotForRead(input.snapshotId);
    await reportStep(input.operationId, 'exporting', snap.sizeBytes);
    const archive = await sharedData.exportArchive({
      operationId: input.operationId,
      snapshotId: input.snapshotId,
      objectKey: snap.objectKey,
      sha256: snap.sha256,
      step: 'exporting',
    });
    const link = await catalog.downloadUrl(archive.key, `${input.snapshotId}.tar.gz`);
    return { ...link, sha256: archive.sha256, size_bytes: archive.sizeBytes, reused: archive.reused };
  }, input.deadlineSeconds);
}
