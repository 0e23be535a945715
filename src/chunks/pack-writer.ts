import fs from 'node:fs';
import type { CatalogDb } from '../catalog/db.js';
import { commitPack, insertPack, markPackDeleted, newPackId, type StoredChunk } from '../catalog/chunk-store.js';
import type { BlobStore, PutOptions } from '../storage/blob-store.js';
import { layout } from '../storage/layout.js';
import { openOutput, type ObjectOutput } from './object-output.js';
import { encodeTrailer, PACK_TARGET_BYTES, type PackFrame } from './pack-format.js';
import type { PackFiles } from './pack-files.js';

/** A pack being filled; one writer (a chunk worker's store) at a time, see PackWriter.withPack. */
export interface OpenPack {
  readonly id: string;
  readonly fd: number;
  /** Where the next frame goes. */
  end: number;
  record(frames: PackFrame[]): void;
}

interface Pack extends OpenPack {
  output: ObjectOutput;
  frames: PackFrame[];
  chunks: StoredChunk[];
}

export interface PackWriterOptions {
  db: CatalogDb;
  store: BlobStore;
  packs: PackFiles;
  accountId: string;
  /** The snapshot the packs are for (its lease); null for the collector's repacks. */
  snapshotId: string | null;
  /** Where packs for a remote store are spooled before their upload. */
  spoolDir?: string;
  putOptions?: () => PutOptions;
  /** Told the bytes of packs as they are uploaded (see ObjectOutput.publish). */
  onUpload?: (n: number) => void | Promise<void>;
  /** Told the ids of a pack's chunks once it is committed: from then on the index finds them. */
  onCommitted?: (chunkIds: string[], bytes: number) => void;
}

/**
 * Fills packs of about PACK_TARGET_BYTES, one per lane (a chunk worker writes into its lane's pack,
 * so two workers never write the same file), and stores them: a pack is sealed with its trailer,
 * published (fsync and rename, or uploaded from its spool), then committed to the index. Its row
 * exists (state writing) before its first byte, so a crash leaves a row the next attempt or the
 * collector uses to find and remove the object.
 */
export class PackWriter {
  private readonly lanes = new Map<number, { pack?: Pack; lock: Promise<void> }>();
  private readonly sealing = new Set<Promise<void>>();
  private readonly unfinished = new Set<Pack>();
  private failure: unknown;
  /** Bytes of packs stored so far (trailers included). */
  storedBytes = 0;
  packsStored = 0;

  constructor(private readonly o: PackWriterOptions) {}

  /**
   * Runs fn with the lane's open pack (opened first if need be), one call at a time per lane; a
   * pack that reached its target size afterwards is sealed in the background.
   */
  async withPack<T>(lane: number, fn: (pack: OpenPack) => Promise<T>): Promise<T> {
    this.throwIfFailed();
    let l = this.lanes.get(lane);
    if (!l) this.lanes.set(lane, (l = { lock: Promise.resolve() }));
    const previous = l.lock;
    let unlock!: () => void;
    l.lock = new Promise<void>((r) => (unlock = r));
    await previous;
    try {
      this.throwIfFailed();
      const pack = (l.pack ??= await this.open());
      const out = await fn(pack);
      if (pack.end >= PACK_TARGET_BYTES) {
        l.pack = undefined;
        this.seal(pack);
      }
      return out;
    } finally {
      unlock();
    }
  }

  private async open(): Promise<Pack> {
    const id = newPackId();
    const key = layout.pack(this.o.accountId, id);
    await insertPack(this.o.db, { id, accountId: this.o.accountId, objectKey: key, writerSnapshotId: this.o.snapshotId });
    const output = await openOutput(this.o.store, key, this.o.spoolDir);
    const pack: Pack = {
      id,
      fd: output.fd,
      end: 0,
      output,
      frames: [],
      chunks: [],
      record(frames) {
        for (const f of frames) {
          pack.frames.push(f);
          for (const [cid, chunkOffset, rawLength] of f.chunks) {
            pack.chunks.push({ id: cid, frameOffset: f.offset, frameLength: f.length, frameRawLength: f.rawLength, chunkOffset, rawLength });
          }
        }
      },
    };
    this.unfinished.add(pack);
    return pack;
  }

  private seal(pack: Pack): void {
    const p = this.store(pack).catch((err) => {
      this.failure ??= err;
    });
    this.sealing.add(p);
    void p.finally(() => this.sealing.delete(p));
  }

  private async store(pack: Pack): Promise<void> {
    if (pack.chunks.length === 0) {
      await this.drop(pack);
      return;
    }
    const trailer = encodeTrailer(pack.frames);
    fs.writeSync(pack.fd, trailer, 0, trailer.length, pack.end);
    const { size } = await pack.output.publish({ putOptions: this.o.putOptions?.(), keep: (file) => this.o.packs.adopt(pack.output.key, file), onUpload: this.o.onUpload });
    await commitPack(this.o.db, { packId: pack.id, accountId: this.o.accountId, snapshotId: this.o.snapshotId, sizeBytes: size, chunks: pack.chunks });
    this.unfinished.delete(pack);
    this.storedBytes += size;
    this.packsStored++;
    this.o.onCommitted?.(
      pack.chunks.map((c) => c.id),
      size,
    );
  }

  private async drop(pack: Pack): Promise<void> {
    await pack.output.discard();
    await this.o.store.abortIncomplete(pack.output.key);
    await this.o.store.delete(pack.output.key);
    await markPackDeleted(this.o.db, pack.id);
    this.unfinished.delete(pack);
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  /** Seals every open pack and waits until all are stored and committed. */
  async finish(): Promise<void> {
    for (const [, l] of this.lanes) {
      await l.lock;
      if (l.pack) this.seal(l.pack);
      l.pack = undefined;
    }
    while (this.sealing.size) await Promise.all([...this.sealing]);
    this.throwIfFailed();
  }

  /**
   * After a failure: packs not committed are removed (object and row); committed ones stay, for
   * the collector to free once nothing references their chunks.
   */
  async abort(): Promise<void> {
    while (this.sealing.size) await Promise.allSettled([...this.sealing]);
    for (const pack of [...this.unfinished]) await this.drop(pack).catch(() => {});
  }
}
