import type { SnapshotRow, SnapshotState } from '../../catalog/schema.js';
import { accountsOf, pastGrace, type CheckRun } from './findings.js';

/** The run's accounts' snapshots in `state`, oldest first. */
export function snapshotsIn(run: CheckRun, state: SnapshotState): Promise<SnapshotRow[]> {
  const accounts = accountsOf(run);
  return run.ctx.db
    .selectFrom('snapshots')
    .selectAll()
    .where('state', '=', state)
    .$if(accounts !== undefined, (q) => q.where('account_id', 'in', accounts!))
    .orderBy('seq')
    .execute();
}

/**
 * Snapshots in a transient `state` (pending, deleting) that nothing will move on: past the grace
 * period, and no running operation names the snapshot or runs on its sandbox (a pause does not
 * name the auto snapshot it reserves inside its workflow).
 */
export async function unattendedSnapshots(run: CheckRun, state: SnapshotState): Promise<SnapshotRow[]> {
  const unattended: SnapshotRow[] = [];
  for (const snap of await snapshotsIn(run, state)) {
    if (!pastGrace(run, snap.updated_at)) continue;
    const running = await run.ctx.db
      .selectFrom('operations')
      .select('id')
      .where('status', '=', 'running')
      .where((eb) => eb.or([eb('snapshot_id', '=', snap.id), eb('sandbox_id', '=', snap.sandbox_id)]))
      .executeTakeFirst();
    if (!running) unattended.push(snap);
  }
  return unattended;
}
