import { Context } from '@temporalio/activity';
import type { ActivityDeps } from './deps.js';
import * as gc from '../catalog/gc.js';
import { classifyKey, layout } from '../storage/layout.js';
import { modifiedAt } from '../storage/modified-at.js';
import fs from 'node:fs/promises';
import path from 'node:path';
import { accountChunkKey } from '../catalog/chunk-store.js';
import { repack } from '../chunks/repacker.js';
import { chunkContext, workDir } from './chunk-context.js';

/** Packs smaller than this are merged when an account has several; at most REPACK_MAX_BYTES of packs per account and pass. */
const REPACK_SMALL_BYTES = 4 * 1024 * 1024;
const REPACK_MAX_BYTES = 256 * 1024 * 1024;
/** How many packs one sweep step handles before it reports (the workflow loops while there are more). */
const BATCH = 200;

export interface SweepResult {
  deleted: number;
  deletedBytes: number;
  resurrected: number;
  more: boolean;
}

/**
 * The collector's steps. Each is idempotent (a retry finds less to do) and deletes an object only
 * after the catalog says nothing can still reference it; the catalog row goes after the object, so
 * a crash between the two leaves a row the next run finishes, never an object without a row.
 */
export function createGcActivities(deps: ActivityDeps) {
  const { db, store } = deps;
  const graceSeconds = deps.gcGraceSeconds ?? 120;
  const beat = (details: unknown) => Context.current().heartbeat(details);

  return {
    async gcMark(scope: gc.GcScope = {}): Promise<{ refsDropped: number; condemned: number }> {
      const refsDropped = await gc.dropDeadRefs(db, scope);
      const condemned = await gc.condemnUnreferenced(db, scope);
      return { refsDropped, condemned };
    },

    async gcSweep(scope: gc.GcScope = {}): Promise<SweepResult> {
      const due = await gc.dueCondemned(db, graceSeconds, BATCH, scope);
      const r: SweepResult = { deleted: 0, deletedBytes: 0, resurrected: 0, more: due.length === BATCH };
      for (const pack of due) {
        beat(r);
        if (!(await gc.confirmCondemned(db, pack.id))) {
          r.resurrected++;
          continue;
        }
        await store.delete(pack.object_key);
        await gc.forgetPack(db, pack.id);
        r.deleted++;
        r.deletedBytes += Number(pack.size_bytes);
      }
      return r;
    },

    /**
     * Rewrites packs holding unreferenced bytes and small packs (up to 256 MiB per account and pass) so the sweep can free
     * them; an account whose repack fails (a damaged chunk) is reported and left as it is.
     */
    async gcRepack(scope: gc.GcScope = {}): Promise<{ packs: number; moved: number; failed: number }> {
      const candidates = await gc.repackCandidates(db, { graceSeconds, smallBytes: REPACK_SMALL_BYTES, maxBytes: REPACK_MAX_BYTES }, scope);
      const r = { packs: 0, moved: 0, failed: 0 };
      if (candidates.size === 0) return r;
      const { packs } = chunkContext(deps);
      const spoolDir = path.join(workDir(deps), 'repack-spool');
      await fs.mkdir(spoolDir, { recursive: true });
      const signal = Context.current().cancellationSignal;
      for (const [accountId, sources] of candidates) {
        beat(r);
        try {
          const chunkKey = await accountChunkKey(db, accountId);
          const done = await repack({ db, store, packs, accountId, chunkKey, sources, spoolDir, signal, beat: () => beat(r) });
          r.packs += sources.length;
          r.moved += done.moved;
        } catch (err) {
          if (signal.aborted) throw err;
          r.failed++;
          deps.log.warn({ accountId, packs: sources.map((p) => p.id), err: (err as Error).message }, 'repack failed; the packs stay as they are');
        }
      }
      return r;
    },

    /** Packs a crashed or failed writer left behind (their rows are its lease; it can no longer commit them). */
    async gcRemoveStaleWrites(scope: gc.GcScope = {}): Promise<{ removed: number; more: boolean }> {
      const stale = await gc.staleWrites(db, graceSeconds, BATCH, scope);
      for (const pack of stale) {
        beat({ pack: pack.id });
        await store.abortIncomplete(pack.object_key);
        await store.delete(pack.object_key);
        await gc.dropStaleWrite(db, pack.id);
      }
      return { removed: stale.length, more: stale.length === BATCH };
    },

    /** Pack objects without a row, or whose row is deleted, older than the grace (a row is always written before its object). */
    async gcRemoveOrphanPacks(scope: gc.GcScope = {}): Promise<{ removed: number }> {
      const cutoff = Date.now() - graceSeconds * 1000;
      let removed = 0;
      let page: { key: string; id: string }[] = [];
      const flush = async () => {
        const states = await gc.packStates(db, page.map((p) => p.id));
        for (const p of page) {
          const state = states.get(p.id);
          if (state !== undefined && state !== 'deleted') continue;
          await store.delete(p.key);
          removed++;
        }
        page = [];
        beat({ removed });
      };
      for await (const obj of store.list(layout.packsRoot)) {
        const c = classifyKey(obj.key);
        if (c?.family !== 'pack' || !c.packId) continue;
        if (scope.accountIds && !scope.accountIds.includes(c.accountId!)) continue;
        const at = await modifiedAt(store, obj);
        if (!at || at.getTime() > cutoff) continue;
        page.push({ key: obj.key, id: c.packId });
        if (page.length >= 1000) await flush();
      }
      if (page.length) await flush();
      return { removed };
    },
  };
}

export type GcActivities = ReturnType<typeof createGcActivities>;
