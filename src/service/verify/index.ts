import type { AppContext } from '../context.js';
import { checkSnapshotObjects } from './snapshot-objects.js';
import { checkChunkStore } from './chunk-store.js';
import { checkOrphans } from './orphans.js';
import { checkPendingSnapshots, checkRunningOperations } from './operations.js';
import { checkStoppedSandboxes } from './sandboxes.js';
import { checkLimits } from './limits.js';
import { checkStuckDeletions } from './deleting.js';
import { DEFAULT_GRACE_SECONDS, type Check, type CheckRun, type Finding, type VerifyOptions } from './findings.js';

export { CHECKS, DEFAULT_GRACE_SECONDS, type CheckName, type Finding, type VerifyOptions } from './findings.js';

/**
 * In this order: the catalog's own rows first (a pending snapshot marked failed by the repair is
 * then judged as failed), the store against the catalog after them.
 */
const ALL: Check[] = [checkRunningOperations, checkPendingSnapshots, checkStuckDeletions, checkStoppedSandboxes, checkLimits, checkSnapshotObjects, checkChunkStore, checkOrphans];

/**
 * The consistency check, modelled on `restic check`: every finding of every check, and with
 * `repair`, each repairable one fixed as it is found. Reads only, unless asked to repair.
 * The fault tests call this as their oracle: an empty list is a consistent stack.
 */
export async function verifyStack(ctx: AppContext, opts: VerifyOptions = {}): Promise<Finding[]> {
  const run: CheckRun = {
    ctx,
    deep: opts.deep ?? false,
    graceMs: (opts.graceSeconds ?? DEFAULT_GRACE_SECONDS) * 1000,
    accountIds: opts.accountIds,
    now: Date.now(),
  };
  const findings: Finding[] = [];
  for (const check of ALL) {
    for (const { repair, ...f } of await check(run)) {
      const finding: Finding = { ...f, repairable: !!repair };
      if (repair && opts.repair) {
        try {
          finding.repaired = await repair();
        } catch (err) {
          finding.repaired = false;
          finding.detail += `; the repair failed: ${(err as Error).message}`;
        }
      }
      findings.push(finding);
    }
  }
  return findings;
}
