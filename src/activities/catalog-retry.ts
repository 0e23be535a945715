import { setTimeout as sleep } from 'node:timers/promises';
import { isCatalogUnavailable } from '../catalog/unavailable.js';

/** How long a data mover waits for an unreachable catalog before it gives up the attempt. */
export const CATALOG_WAIT_MS = 5 * 60_000;

/**
 * Runs a catalog read inside a long activity again while the catalog is unreachable, for up to
 * `totalMs`: a PostgreSQL restart then costs a data mover a wait, not one of its few attempts (each
 * of which would stop the sandbox again). Other errors, and the signal, end it at once. The caller
 * heartbeats meanwhile.
 */
export async function whileCatalogUnavailable<T>(fn: () => Promise<T>, opts: { totalMs: number; signal?: AbortSignal }): Promise<T> {
  const until = Date.now() + opts.totalMs;
  for (let delay = 500; ; delay = Math.min(delay * 2, 5000)) {
    try {
      return await fn();
    } catch (err) {
      if (!isCatalogUnavailable(err) || Date.now() + delay > until) throw err;
      await sleep(delay, undefined, { signal: opts.signal });
    }
  }
}
