import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import type { BlobStore, CallOptions } from '../storage/blob-store.js';

/**
 * Packs as files on this host, which is how restores, exports and the collector read them (chunk
 * workers read frames with pread). With a local store that is the store's own object file; with a
 * remote one a bounded, least-recently-used cache of whole packs (`PackCache`): packs this host
 * wrote are adopted from their spool as they are uploaded, and a pack a restore needs is downloaded
 * once. A restore or fork of a snapshot whose packs are cached reads nothing from the store.
 */
export interface PackFiles {
  /** A local file with the pack's bytes, fetched first if need be; pinned until the returned release() is called. */
  open(key: string, o?: CallOptions): Promise<{ file: string; release(): void }>;
  /** Takes a spool file that was just uploaded as `key` (remote stores); false when it was not taken. */
  adopt(key: string, file: string): Promise<boolean>;
  /** Drops a local copy that turned out damaged (a remote store's cache only). */
  forget(key: string): Promise<void>;
}

export function packFiles(store: BlobStore, cache?: PackCache): PackFiles {
  if (store.local) {
    const local = store.local;
    return {
      open: async (key) => ({ file: await local.objectFile(key), release: () => {} }),
      adopt: async () => false,
      forget: async () => {},
    };
  }
  if (!cache) {
    throw new Error('a remote store needs a pack cache to read packs as files');
  }
  return {
    open: (key, o) => cache.open(key, (dest) => download(store, key, dest, o)),
    adopt: (key, file) => cache.adopt(key, file),
    forget: (key) => cache.forget(key),
  };
}

async function download(store: BlobStore, key: string, dest: string, o?: CallOptions): Promise<void> {
  await pipeline(await store.get(key, o), createWriteStream(dest), { signal: o?.signal });
}

/**
 * Whole packs in a directory, at most `budgetBytes` of them (beyond it only while pinned), the
 * least recently used evicted first. Files appear by rename, so a reader never sees half a pack;
 * several processes may share the directory (a file removed under an open descriptor stays
 * readable through it).
 */
export class PackCache {
  private total = -1;
  private readonly pins = new Map<string, number>();
  private readonly fetching = new Map<string, Promise<void>>();
  readonly stats = { hits: 0, misses: 0, adopted: 0, evicted: 0 };

  constructor(
    readonly dir: string,
    readonly budgetBytes: number,
  ) {}

  fileOf(key: string): string {
    return path.join(this.dir, key.replace(/\//g, '_'));
  }

  async open(key: string, fetch: (dest: string) => Promise<void>): Promise<{ file: string; release(): void }> {
    const file = this.fileOf(key);
    this.pin(key);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.unpin(key);
    };
    try {
      const now = new Date();
      const hit = await fs.utimes(file, now, now).then(
        () => true,
        () => false,
      );
      if (hit) this.stats.hits++;
      else {
        this.stats.misses++;
        let f = this.fetching.get(key);
        if (!f) {
          f = this.fetch(file, fetch).finally(() => this.fetching.delete(key));
          this.fetching.set(key, f);
        }
        await f;
      }
      return { file, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  private async fetch(file: string, fetch: (dest: string) => Promise<void>): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    const tmp = `${file}.partial-${randomBytes(4).toString('hex')}`;
    try {
      await fetch(tmp);
      const { size } = await fs.stat(tmp);
      await fs.rename(tmp, file);
      await this.added(size);
    } finally {
      await fs.rm(tmp, { force: true });
    }
  }

  async adopt(key: string, spool: string): Promise<boolean> {
    await fs.mkdir(this.dir, { recursive: true });
    const file = this.fileOf(key);
    try {
      const { size } = await fs.stat(spool);
      await fs.rename(spool, file);
      this.stats.adopted++;
      await this.added(size);
      return true;
    } catch {
      // Another filesystem (EXDEV) or a vanished spool: the pack is simply not cached.
      return false;
    }
  }

  async forget(key: string): Promise<void> {
    const file = this.fileOf(key);
    const st = await fs.stat(file).catch(() => undefined);
    await fs.rm(file, { force: true });
    if (st && this.total >= 0) this.total -= st.size;
  }

  private pin(key: string): void {
    this.pins.set(key, (this.pins.get(key) ?? 0) + 1);
  }

  private unpin(key: string): void {
    const n = (this.pins.get(key) ?? 1) - 1;
    if (n <= 0) this.pins.delete(key);
    else this.pins.set(key, n);
  }

  private async entries(): Promise<{ name: string; size: number; used: number }[]> {
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    const out: { name: string; size: number; used: number }[] = [];
    for (const name of names) {
      if (name.includes('.partial-')) continue;
      const st = await fs.stat(path.join(this.dir, name)).catch(() => undefined);
      if (st?.isFile()) out.push({ name, size: st.size, used: st.mtimeMs });
    }
    return out;
  }

  private async added(size: number): Promise<void> {
    if (this.total < 0) this.total = (await this.entries()).reduce((s, e) => s + e.size, 0);
    else this.total += size;
    if (this.total <= this.budgetBytes) return;
    const pinned = new Set([...this.pins.keys()].map((k) => path.basename(this.fileOf(k))));
    const all = (await this.entries()).sort((a, b) => a.used - b.used);
    this.total = all.reduce((s, e) => s + e.size, 0);
    for (const e of all) {
      if (this.total <= this.budgetBytes) break;
      if (pinned.has(e.name)) continue;
      await fs.rm(path.join(this.dir, e.name), { force: true });
      this.total -= e.size;
      this.stats.evicted++;
    }
  }
}
