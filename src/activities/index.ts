import type { ActivityDeps } from './deps.js';
import { createCatalogActivities } from './catalog-activities.js';
import { createSandboxActivities } from './sandbox-activities.js';
import { withFailureMapping } from './failures.js';
import { createGcActivities, type GcActivities } from './gc-activities.js';

export type { ActivityDeps } from './deps.js';

/** Activities for the shared task queue: catalog and object store, and the chunk store's collector. */
export function createSharedActivities(deps: ActivityDeps) {
  return withFailureMapping(withFaultPoints(deps, { ...createCatalogActivities(deps), ...createGcActivities(deps) }));
}

/** Activities for a host's own task queue: the sandboxes' disks and processes. */
export function createHostActivities(deps: ActivityDeps) {
  return withFailureMapping(withFaultPoints(deps, createSandboxActivities(deps)));
}

/**
 * With a fault hook armed (tests only), every activity first passes the point `activity:<name>`,
 * so a test can fail or hold any step, including those that move no data. The info is empty on
 * purpose: hooks keyed by sandbox or snapshot id ignore these points.
 */
function withFaultPoints<T extends Record<string, (...args: any[]) => Promise<any>>>(deps: ActivityDeps, activities: T): T {
  const hook = deps.faultHook;
  if (!hook) return activities;
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(activities)) {
    out[name] = async (...args: unknown[]) => {
      await hook(`activity:${name}`, {});
      return fn(...args);
    };
  }
  return out as T;
}

export type SharedActivities = ReturnType<typeof createSharedActivities>;
export type HostActivities = ReturnType<typeof createHostActivities>;

/** Long steps that stream a snapshot's bytes: they heartbeat, and never run as local activities. */
type StoreDataMover = 'exportArchive' | 'convertImport';
type HostDataMover = 'snapshotSandbox' | 'stageSnapshot';

/** Short catalog and object-store steps (workflows run them as local activities). */
export type CatalogActivities = Omit<SharedActivities, StoreDataMover | keyof GcActivities>;
export type { GcActivities };
export type StoreDataActivities = Pick<SharedActivities, StoreDataMover>;
export type HostControlActivities = Omit<HostActivities, HostDataMover>;
export type HostDataActivities = Pick<HostActivities, HostDataMover>;
