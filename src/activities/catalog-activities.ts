import type { ActivityDeps } from './deps.js';
import * as snapshots from '../catalog/snapshots.js';
import * as operations from '../catalog/operations.js';
import * as sandboxes from '../catalog/sandboxes.js';
import type { SandboxState, SnapshotKind } from '../catalog/schema.js';
import { layout } from '../storage/layout.js';
import { CagedError } from '../shared/errors.js';
import { exportArchive, downloadUrl, type ExportArchiveInput } from './snapshot-export.js';
import { convertImport, type ConvertImportInput } from './snapshot-import.js';
import { progressReporter } from './progress.js';

interface SnapshotReservation {
  snapshotId: string;
  accountId: string;
  sandboxId: string;
  name: string;
  kind: SnapshotKind;
  holdReplaced?: boolean;
}

/** Activities on the catalog and the object store: they run on the shared task queue. */
export function createCatalogActivities(deps: ActivityDeps) {
  const { db, store, limits, log } = deps;

  async function reserve(r: SnapshotReservation) {
    const out = await snapshots.reserveSnapshot(
      db,
      { id: r.snapshotId, accountId: r.accountId, sandboxId: r.sandboxId, name: r.name, kind: r.kind, holdReplaced: r.holdReplaced },
      limits,
    );
    return { objectKey: out.snapshot.object_key, replaces: out.replaces };
  }

  return {
    async exportArchive(input: ExportArchiveInput) {
      return exportArchive(deps, input, progressReporter(db, input.operationId, input.step ?? 'exporting'));
    },

    async downloadUrl(key: string, filename: string) {
      return downloadUrl(deps, key, filename);
    },

    async convertImport(input: ConvertImportInput) {
      return convertImport(deps, input, progressReporter(db, input.operationId, input.step ?? 'converting'));
    },

    async touchSandbox(sandboxId: string): Promise<void> {
      await sandboxes.touchSandbox(db, sandboxId);
    },

    /** reserveSnapshot, and the sandbox's state, in one step: what a snapshot needs before it starts. */
    async beginSnapshot(r: SnapshotReservation) {
      const reserved = await reserve(r);
      return { ...reserved, sandboxState: (await sandboxes.getSandbox(db, r.sandboxId))?.state ?? ('missing' as const) };
    },

    async recordOperation(rec: operations.NewOperationRecord): Promise<void> {
      await operations.insertOperation(db, rec);
    },

    /**
     * Returns the step: as a local activity its input is not in the workflow history, its result is,
     * and that is how `caged ops show` names the steps of a timeline.
     */
    async reportStep(operationId: string, step: string, bytesTotal?: number | null): Promise<string> {
      await operations.setOperationProgress(db, operationId, { step, ...(bytesTotal === undefined ? {} : { bytesTotal }) });
      return step;
    },

    async finishOperation(operationId: string, outcome: operations.OperationOutcome): Promise<void> {
      await operations.finishOperation(db, operationId, outcome);
      log.info({ operationId, status: outcome.status, error: outcome.error }, 'operation finished');
    },

    /** With operationId, the operation's step becomes 'finalizing' too. */
    async markSnapshotReady(snapshotId: string, sizeBytes: number, sha256: string, operationId?: string): Promise<void> {
      await snapshots.markSnapshotReady(db, snapshotId, sizeBytes, sha256, limits);
      if (operationId) await operations.setOperationProgress(db, operationId, { step: 'finalizing' });
    },

    async releaseReplacedSnapshot(snapshotId: string): Promise<void> {
      await snapshots.releaseReplacedSnapshot(db, snapshotId);
    },

    async markSnapshotFailed(snapshotId: string, code: string, message: string): Promise<void> {
      await snapshots.markSnapshotFailed(db, snapshotId, code, message);
    },

    async beginDeleteSnapshot(snapshotId: string, operationId: string): Promise<{ objectKey: string; alreadyDeleted: boolean }> {
      const snap = await snapshots.markSnapshotDeleting(db, snapshotId, operationId);
      return { objectKey: snap.object_key, alreadyDeleted: snap.state === 'deleted' };
    },

    async markSnapshotDeleted(snapshotId: string): Promise<void> {
      await snapshots.markSnapshotDeleted(db, snapshotId);
    },

    async claimSnapshotForRead(snapshotId: string): Promise<{ objectKey: string; sha256: string; sizeBytes: number; sandboxId: string }> {
      const s = await snapshots.claimSnapshotForRead(db, snapshotId);
      return { objectKey: s.object_key, sha256: s.sha256 ?? '', sizeBytes: Number(s.size_bytes ?? 0), sandboxId: s.sandbox_id };
    },

    /** The key of a snapshot's data, as its reservation recorded it. */
    async snapshotObjectKey(snapshotId: string): Promise<string> {
      const row = await snapshots.getSnapshot(db, snapshotId);
      if (!row) throw new CagedError('not_found', `snapshot ${snapshotId} not found`);
      return row.object_key;
    },

    /** Every object the layout gives a snapshot (its data, its export and checksum, of this and earlier versions), with whatever interrupted uploads of them left. */
    async deleteSnapshotObjects(snapshotId: string): Promise<void> {
      const row = await snapshots.getSnapshot(db, snapshotId);
      if (!row) return;
      for (const key of [row.object_key, ...layout.snapshotExtras(row.sandbox_id, row.id)]) {
        await store.abortIncomplete(key);
        await store.delete(key);
      }
    },

    /** Removes an object and whatever an interrupted upload of it left behind (a local activity: it cannot heartbeat, its timeout bounds it). */
    async deleteObject(key: string): Promise<void> {
      await store.abortIncomplete(key);
      await store.delete(key);
    },

    async setSandboxState(sandboxId: string, state: SandboxState): Promise<void> {
      await sandboxes.setSandboxState(db, sandboxId, state);
    },

    async getSandboxState(sandboxId: string): Promise<SandboxState | 'missing'> {
      return (await sandboxes.getSandbox(db, sandboxId))?.state ?? 'missing';
    },
  };
}
