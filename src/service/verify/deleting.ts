import { markSnapshotDeleted } from '../../catalog/snapshots.js';
import type { Check, Found } from './findings.js';
import { unattendedSnapshots } from './snapshot-rows.js';

/**
 * A snapshot in `deleting` is out of use for good (no reader may claim it): a delete or a
 * replacement is finishing it. One left there with no operation running on its sandbox is a
 * clean-up that failed after its commit point (deleting the auto snapshot a pause replaced). The
 * repair finishes it: the object goes, then the row; its exports become orphans for the orphan check.
 */
export const checkStuckDeletions: Check = async (run) => {
  const { db, store } = run.ctx;
  const found: Found[] = [];
  for (const snap of await unattendedSnapshots(run, 'deleting')) {
    found.push({
      check: 'snapshot_deletion_unfinished',
      subject: snap.id,
      detail: `snapshot ${snap.id} of sandbox ${snap.sandbox_id} is being deleted, and no operation runs that will finish it`,
      repair: async () => {
        await store.abortIncomplete(snap.object_key);
        await store.delete(snap.object_key);
        await markSnapshotDeleted(db, snap.id);
        return true;
      },
    });
  }
  return found;
};
