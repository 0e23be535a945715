import { markSnapshotDeleted } from '../../catalog/snapshots.js';
import { accountsOf, pastGrace, type Check, type Found } from './findings.js';

/**
 * A snapshot in `deleting` is out of use for good (no reader may claim it): a delete or a
 * replacement is finishing it. One left there with no operation running on its sandbox is a
 * clean-up that failed after its commit point (deleting the auto snapshot a pause replaced). The
 * repair finishes it: the object goes, then the row; its exports become orphans for the orphan check.
 */
export const checkStuckDeletions: Check = async (run) => {
  const { db, store } = run.ctx;
  const accounts = accountsOf(run);
  const rows = await db
    .selectFrom('snapshots')
    .selectAll()
    .where('state', '=', 'deleting')
    .$if(accounts !== undefined, (q) => q.where('account_id', 'in', accounts!))
    .orderBy('seq')
    .execute();
  const found: Found[] = [];
  for (const snap of rows) {
    if (!pastGrace(run, snap.updated_at)) continue;
    const busy = await db
      .selectFrom('operations')
      .select('id')
      .where('status', '=', 'running')
      .where((eb) => eb.or([eb('snapshot_id', '=', snap.id), eb('sandbox_id', '=', snap.sandbox_id)]))
      .executeTakeFirst();
    if (busy) continue;
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
