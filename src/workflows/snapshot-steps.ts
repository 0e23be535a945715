import { CancellationScope, patched } from '@temporalio/workflow';
import { catalog, hostActivities, objectStore } from './activities.js';
import type { Saga } from './saga.js';
import { failureCode } from './failure.js';
import type { SnapshotResult } from '../shared/definitions.js';
import { OBJECT_LAYOUT } from './patches.js';
import { layout } from '../storage/layout.js';


export interface TakeSnapshotArgs {
  operationId: string;
  accountId: string;
  sandboxId: string;
  snapshotId: string;
  /** A fixed name, or (for automatic snapshots) candidates tried in turn until one is free. */
  name: string | ((attempt: number) => string);
  kind: 'manual' | 'auto';
  hostQueue: string;
  /** false when the caller has stopped the sandbox and wants it to stay stopped (pause). */
  resumeAfter: boolean;
}


/**
 * Reserve → quiesce, stream, resume (one host step) → ready. Shared by createSnapshot and pause.
 * The sandbox is resumed on every path (success, failure, cancellation) when resumeAfter is set.
 */
export async function takeSnapshot(a: TakeSnapshotArgs, saga: Saga): Promise<SnapshotResult & { replaced?: string }> {
  const { control, data } = hostActivities(a.hostQueue);
  saga.add('mark snapshot failed', (why) => catalog.markSnapshotFailed(a.snapshotId, why.code, why.message));
  // The catalog names the snapshot's object (the key is on its row from the reservation on).
  const { replaces, sandboxState, objectKey } = await reserve(a, (r) => catalog.beginSnapshot({ ...r, holdReplaced: true }));
  // The reservation took the replaced snapshot out of use (it no longer counts against the limit
  // and no reader can claim it); until this one is ready it goes back to ready on any failure.
  if (replaces) saga.add('keep the replaced snapshot', () => catalog.releaseReplacedSnapshot(replaces));

  // Operations on a sandbox are serialised, so its catalog state cannot change under us.
  const resume = a.resumeAfter && sandboxState !== 'paused';
  if (resume) saga.add('resume sandbox', () => control.resumeSandbox(a.sandboxId));
  saga.add('delete partial object', () => objectStore.deleteObject(objectKey));
  const { sizeBytes, sha256 } = await data.snapshotSandbox({
    operationId: a.operationId,
    accountId: a.accountId,
    sandboxId: a.sandboxId,
    snapshotId: a.snapshotId,
    objectKey,
    quiesce: a.resumeAfter,
    quiesceStep: 'quiescing',
    step: 'uploading',
    resume,
  });

  // The commit step itself is not cancelled: a cancel that interrupted it after the row became
  // ready would make the saga delete a ready snapshot's object.
  await CancellationScope.nonCancellable(() => catalog.markSnapshotReady(a.snapshotId, sizeBytes, sha256, a.operationId));
  const result = { snapshot_id: a.snapshotId, size_bytes: sizeBytes, sha256, ...(replaces ? { replaced: replaces } : {}) };
  // Commit point: the snapshot is ready and nothing may undo it. Deleting the snapshot it replaces
  // is clean-up; if that fails the old one stays out of use, for `caged admin verify --repair`.
  saga.commit();
  if (replaces) saga.afterSuccess('delete the replaced snapshot', () => deleteSnapshotData(replaces, a.operationId));
  return result;
}

const MAX_NAME_ATTEMPTS = 60;

type Reservation = { snapshotId: string; accountId: string; sandboxId: string; name: string; kind: 'manual' | 'auto' };

async function reserve<R>(a: TakeSnapshotArgs, step: (r: Reservation) => Promise<R>): Promise<R> {
  for (let attempt = 0; ; attempt++) {
    const name = typeof a.name === 'string' ? a.name : a.name(attempt);
    try {
      return await step({ snapshotId: a.snapshotId, accountId: a.accountId, sandboxId: a.sandboxId, name, kind: a.kind });
    } catch (err) {
      if (typeof a.name === 'string' || attempt >= MAX_NAME_ATTEMPTS || failureCode(err) !== 'name_taken') throw err;
    }
  }
}

/** deleting → objects gone → deleted; every step is idempotent. */
export async function deleteSnapshotData(snapshotId: string, operationId: string): Promise<void> {
  const { objectKey } = await catalog.beginDeleteSnapshot(snapshotId, operationId);
  if (patched(OBJECT_LAYOUT)) {
    // Every object the layout gives the snapshot, its export (so no download link outlives it) included.
    await objectStore.deleteSnapshotObjects(snapshotId);
  } else {
    await objectStore.deleteObject(objectKey);
    for (const key of layout.legacyExports(snapshotId)) await objectStore.deleteObject(key);
  }
  await catalog.markSnapshotDeleted(snapshotId);
}
