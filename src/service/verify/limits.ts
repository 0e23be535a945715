import { sql } from 'kysely';
import { accountStoredBytes } from '../../catalog/chunk-store.js';
import { accountsOf, type Check, type Found } from './findings.js';

/**
 * The limits hold in the catalog at every moment, as they are enforced: per sandbox, snapshots
 * pending or ready (a replaced one goes to deleting before its successor is reserved); per
 * account, the bytes of ready snapshots and of those still being deleted (checked when a snapshot
 * becomes ready, under the account's lock). Never repairable: which snapshot to give up is the
 * owner's choice.
 */
export const checkLimits: Check = async (run) => {
  const { db, config } = run.ctx;
  const { maxSnapshotsPerSandbox, maxAccountBytes } = config.limits;
  const accounts = accountsOf(run);
  const found: Found[] = [];

  const perSandbox = await db
    .selectFrom('snapshots')
    .select(['sandbox_id', (eb) => eb.fn.countAll<string>().as('n')])
    .where('state', 'in', ['pending', 'ready'])
    .$if(accounts !== undefined, (q) => q.where('account_id', 'in', accounts!))
    .groupBy('sandbox_id')
    .having((eb) => eb.fn.countAll(), '>', maxSnapshotsPerSandbox)
    .orderBy('sandbox_id')
    .execute();
  for (const { sandbox_id, n } of perSandbox) {
    found.push({
      check: 'snapshots_per_sandbox_exceeded',
      subject: sandbox_id,
      detail: `sandbox ${sandbox_id} has ${Number(n)} live snapshots, over the limit of ${maxSnapshotsPerSandbox}`,
    });
  }

  const perAccount = await db
    .selectFrom('snapshots')
    .select('account_id')
    .distinct()
    .where('state', 'in', ['ready', 'deleting'])
    .$if(accounts !== undefined, (q) => q.where('account_id', 'in', accounts!))
    .orderBy('account_id')
    .execute();
  for (const { account_id } of perAccount) {
    // As the limit counts them: packs, manifests, archives of the earlier format.
    const bytes = await accountStoredBytes(db, account_id, { committedOnly: true });
    if (bytes <= maxAccountBytes) continue;
    found.push({
      check: 'account_bytes_exceeded',
      subject: account_id,
      detail: `account ${account_id} stores ${bytes} bytes, over the limit of ${maxAccountBytes}`,
    });
  }
  return found;
};
