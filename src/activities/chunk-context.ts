import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import type { ActivityDeps } from './deps.js';
import { PackCache, packFiles, type PackFiles } from '../chunks/pack-files.js';
import { chunkPool, type ChunkPool } from '../chunks/worker-pool.js';
import { classifyKey } from '../storage/layout.js';

const DEFAULT_PACK_CACHE_BYTES = 2 * 1024 ** 3;

/** What the chunked data movers share in a worker process: its chunk workers, and its packs as files. */
export interface ChunkContext {
  pool: ChunkPool;
  packs: PackFiles;
}

const contexts = new WeakMap<ActivityDeps, ChunkContext>();

/** The process's chunk context for these deps, made on first use (the pack cache under deps.workDir). */
export function chunkContext(deps: ActivityDeps): ChunkContext {
  let c = contexts.get(deps);
  if (!c) {
    let cache: PackCache | undefined;
    if (!deps.store.local) {
      const dir = path.join(workDir(deps), 'pack-cache');
      fs.mkdirSync(dir, { recursive: true });
      cache = new PackCache(dir, deps.packCacheBytes ?? DEFAULT_PACK_CACHE_BYTES);
    }
    c = { pool: chunkPool(), packs: packFiles(deps.store, cache) };
    contexts.set(deps, c);
  }
  return c;
}

/** Host-local space for caches and scratch trees (exports, imports) that belong to no sandbox. */
export function workDir(deps: ActivityDeps): string {
  return deps.workDir ?? path.join(os.tmpdir(), 'caged-work');
}

/** Whether a snapshot's key is a chunked snapshot's manifest (otherwise: an archive of the earlier format). */
export const isManifestKey = (key: string) => classifyKey(key)?.family === 'manifest';
