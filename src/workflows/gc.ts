import { proxyActivities } from '@temporalio/workflow';
import type { GcActivities } from '../activities/index.js';
import type { GcScope } from '../catalog/gc.js';

/** One pass never runs unbounded: steps that find more come back at most this often per pass. */
const MAX_ROUNDS = 50;

const steps = proxyActivities<GcActivities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 10 },
});

export interface GcResult {
  refsDropped: number;
  condemned: number;
  deleted: number;
  deletedBytes: number;
  resurrected: number;
  repacked: number;
  repackFailures: number;
  staleWritesRemoved: number;
  orphansRemoved: number;
}

/**
 * One pass of the chunk store's garbage collector, started by a Temporal Schedule (overlaps
 * skipped, so passes never run side by side): mark (condemn live packs nothing references), repack
 * (copy what is still referenced out of packs holding unreferenced bytes and small packs, which are condemned), sweep
 * (delete condemned packs whose grace is over, after a last check under each pack's lock), then the
 * leftovers of writers that crashed or failed, and pack objects without a row. Nothing here locks
 * out snapshots: they go on while it runs, and what they reference meanwhile is kept. The Schedule
 * starts it unscoped (every account); `scope` confines a pass to some accounts.
 */
export async function gcWorkflow(scope: GcScope = {}): Promise<GcResult> {
  const r: GcResult = { refsDropped: 0, condemned: 0, deleted: 0, deletedBytes: 0, resurrected: 0, repacked: 0, repackFailures: 0, staleWritesRemoved: 0, orphansRemoved: 0 };
  Object.assign(r, await steps.gcMark(scope));
  const repacked = await steps.gcRepack(scope);
  r.repacked = repacked.packs;
  r.repackFailures = repacked.failed;
  for (let i = 0; i < MAX_ROUNDS; i++) {
    const s = await steps.gcSweep(scope);
    r.deleted += s.deleted;
    r.deletedBytes += s.deletedBytes;
    r.resurrected += s.resurrected;
    if (!s.more) break;
  }
  for (let i = 0; i < MAX_ROUNDS; i++) {
    const s = await steps.gcRemoveStaleWrites(scope);
    r.staleWritesRemoved += s.removed;
    if (!s.more) break;
  }
  r.orphansRemoved = (await steps.gcRemoveOrphanPacks(scope)).removed;
  return r;
}
