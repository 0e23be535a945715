import fs from 'node:fs';
import type { CatalogDb } from '../catalog/db.js';
import type { PackRow } from '../catalog/schema.js';
import { insertPack, markPackDeleted, newPackId } from '../catalog/chunk-store.js';
import { commitRepack, referencedChunksOf, type RepackChunk } from '../catalog/gc.js';
import type { BlobStore } from '../storage/blob-store.js';
import { layout } from '../storage/layout.js';
import { compressFrame, createChunkReader, FRAME_BYTES, SHARED_FRAME_BELOW } from './codec.mjs';
import { openOutput } from './object-output.js';
import { encodeTrailer, type PackFrame } from './pack-format.js';
import type { PackFiles } from './pack-files.js';

export interface RepackOptions {
  db: CatalogDb;
  store: BlobStore;
  packs: PackFiles;
  accountId: string;
  chunkKey: Buffer;
  /** Live packs of the account to rewrite (repackCandidates). */
  sources: PackRow[];
  spoolDir: string;
  signal: AbortSignal;
  beat?: () => void;
}

/**
 * Copies the chunks of `sources` that snapshots still reference into one new pack (each checked
 * against its id on the way), commits the move and condemns the sources, whose space the sweep
 * frees a grace later. Runs in the collector's thread: it handles a few packs per pass. The new
 * pack's row (writer null) is its lease until the commit; on failure it is removed.
 */
export async function repack(o: RepackOptions): Promise<{ moved: number; sizeBytes: number }> {
  const chunks = await referencedChunksOf(o.db, o.sources.map((p) => p.id));
  const keys = new Map(o.sources.map((p) => [p.id, p.object_key]));
  const id = newPackId();
  const key = layout.pack(o.accountId, id);
  await insertPack(o.db, { id, accountId: o.accountId, objectKey: key, writerSnapshotId: null });
  const out = await openOutput(o.store, key, o.spoolDir);
  const frames: PackFrame[] = [];
  const moved: Parameters<typeof commitRepack>[1]['moved'] = [];
  let end = 0;
  let pending: { c: RepackChunk; data: Buffer }[] = [];
  let pendingBytes = 0;
  const write = (raw: Buffer, members: { c: RepackChunk; at: number }[]) => {
    const data = compressFrame(raw);
    fs.writeSync(out.fd, data, 0, data.length, end);
    frames.push({ offset: end, length: data.length, rawLength: raw.length, chunks: members.map((m) => [m.c.hash, m.at, m.c.rawLength]) });
    for (const m of members) moved.push({ ...m.c, newFrameOffset: end, newFrameLength: data.length, newFrameRawLength: raw.length, newChunkOffset: m.at });
    end += data.length;
  };
  const flush = () => {
    if (!pending.length) return;
    let at = 0;
    write(
      Buffer.concat(pending.map((p) => p.data)),
      pending.map((p) => {
        const m = { c: p.c, at };
        at += p.data.length;
        return m;
      }),
    );
    pending = [];
    pendingBytes = 0;
  };
  const opened = new Map<string, { file: string; fd: number; release(): void }>();
  const chunkOf = createChunkReader(o.chunkKey, (packId, offset, length) => {
    const stored = Buffer.allocUnsafe(length);
    return stored.subarray(0, fs.readSync(opened.get(packId)!.fd, stored, 0, length, offset));
  });
  try {
    for (const c of chunks) {
      o.signal.throwIfAborted();
      if (!opened.has(c.packId)) {
        const f = await o.packs.open(keys.get(c.packId)!, { signal: o.signal });
        opened.set(c.packId, { ...f, fd: fs.openSync(f.file, 'r') });
        o.beat?.();
      }
      // A copy: the reader reuses its frame for the next chunk.
      const data = Buffer.from(chunkOf(c.packId, { ...c, length: c.rawLength, id: Buffer.from(c.hash, 'hex') }));
      if (data.length >= SHARED_FRAME_BELOW) {
        write(data, [{ c, at: 0 }]);
        continue;
      }
      if (pendingBytes + data.length > FRAME_BYTES) flush();
      pending.push({ c, data });
      pendingBytes += data.length;
    }
    flush();
    const trailer = encodeTrailer(frames);
    fs.writeSync(out.fd, trailer, 0, trailer.length, end);
    const { size } = await out.publish({ keep: (file) => o.packs.adopt(key, file) });
    await commitRepack(o.db, { packId: id, sizeBytes: size, sources: o.sources.map((p) => p.id), moved });
    return { moved: moved.length, sizeBytes: size };
  } catch (err) {
    await out.discard().catch(() => {});
    await o.store.delete(key).catch(() => {});
    await markPackDeleted(o.db, id).catch(() => {});
    throw err;
  } finally {
    for (const s of opened.values()) {
      fs.closeSync(s.fd);
      s.release();
    }
  }
}
