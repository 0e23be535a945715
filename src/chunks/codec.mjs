// How file contents become chunks and chunks become frames: the chunk id (keyed BLAKE3), the
// content-defined chunker (FastCDC) and the zstd frames chunks are stored in.
//
// Plain JS on purpose: it runs in worker threads (chunk-worker.mjs), which do not get the TypeScript
// loader the main thread registers (tsx), as well as in the main thread. Types: codec.d.mts.
import { createHash } from 'node:crypto';
import zlib from 'node:zlib';
import { Blake3Hasher } from '@napi-rs/blake-hash';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Chunk sizes, chosen by measurement (../shared/research/incremental-snapshots.md, and bench/): files
 * smaller than SMALL_FILE_BYTES are one chunk each, so an edit costs the file; larger files are cut
 * by content, so an edit inside them costs the chunks around it and an insertion does not shift the
 * rest. A chunk is at least MIN and at most MAX bytes, AVG on average.
 */
export const SMALL_FILE_BYTES = 1 * MiB;
export const MIN_CHUNK_BYTES = 256 * KiB;
export const AVG_CHUNK_BYTES = 1 * MiB;
export const MAX_CHUNK_BYTES = 4 * MiB;
/**
 * Chunks smaller than this share a zstd frame with their neighbours (up to FRAME_BYTES of raw
 * data): one compression call for many small files instead of one each, and a better ratio. Larger
 * chunks are a frame of their own. A read of one small chunk decompresses its whole frame, and after
 * a few incremental snapshots a restore's files come from many frames: 1 MiB frames stored 2% more
 * than 4 MiB ones (64 MiB of small files from node_modules, level 1: ratio 4.74 against 4.83) and
 * cut that read amplification by four (an in-place restore after 20 snapshots spent 2.4x the CPU of
 * one from a single snapshot decompressing 4 MiB frames again and again).
 */
export const SHARED_FRAME_BELOW = 512 * KiB;
export const FRAME_BYTES = 1 * MiB;
export const ZSTD_LEVEL = 1;
export const CHUNK_ID_BYTES = 32;

/** The id of a chunk: BLAKE3 keyed with the account's key (32 bytes). */
export function chunkId(key, data) {
  return Blake3Hasher.newKeyed(key).update(data).digestBuffer();
}

/**
 * The gear table of the account's chunker, derived from its key (as restic draws a polynomial per
 * repository): where chunks are cut then tells nothing across accounts either.
 */
export function gearTable(key) {
  const bytes = createHash('shake256', { outputLength: 256 * 4 }).update('caged-gear-v1').update(key).digest();
  return new Int32Array(bytes.buffer, bytes.byteOffset, 256).slice();
}

// Normalised chunking (FastCDC): a harder mask before the average size and an easier one after it
// make chunk sizes cluster around AVG. The masks take high bits, which depend on the last 32 bytes.
const AVG_BITS = Math.round(Math.log2(AVG_CHUNK_BYTES));
const MASK_SMALL = highBits(AVG_BITS + 2);
const MASK_LARGE = highBits(AVG_BITS - 2);

function highBits(n) {
  return ((2 ** n - 1) * 2 ** (32 - n)) | 0;
}

/**
 * A FastCDC cutter. cut(buf, start, end, eof) returns the end of the chunk that starts at `start`
 * within buf[start, end), or -1 when more data is needed to tell (not at the end of the file and
 * fewer than MAX bytes available without a cut point). The result depends only on the chunk's own
 * bytes, so it does not matter how the file was split into reads.
 *
 * Written here because no maintained FastCDC package exists on npm (the research notes); it is
 * the published algorithm (Xia et al., USENIX ATC 2016) in a few lines.
 */
export function createCutter(gear) {
  return function cut(buf, start, end, eof) {
    const available = end - start;
    if (available <= MIN_CHUNK_BYTES) return eof ? end : -1;
    const limit = Math.min(available, MAX_CHUNK_BYTES);
    const normal = start + Math.min(AVG_CHUNK_BYTES, limit);
    const stop = start + limit;
    let fp = 0;
    let i = start + MIN_CHUNK_BYTES;
    for (; i < normal; i++) {
      fp = ((fp << 1) + gear[buf[i]]) | 0;
      if ((fp & MASK_SMALL) === 0) return i + 1;
    }
    for (; i < stop; i++) {
      fp = ((fp << 1) + gear[buf[i]]) | 0;
      if ((fp & MASK_LARGE) === 0) return i + 1;
    }
    if (limit === MAX_CHUNK_BYTES || eof) return stop;
    return -1;
  };
}

/** The end of each chunk of a whole buffer (a file's contents), in order. */
export function chunkEnds(cut, buf) {
  if (buf.length < SMALL_FILE_BYTES) return buf.length === 0 ? [] : [buf.length];
  const ends = [];
  for (let at = 0; at < buf.length; ) {
    at = cut(buf, at, buf.length, true);
    ends.push(at);
  }
  return ends;
}

const ZSTD_OPTIONS = {
  params: { [zlib.constants.ZSTD_c_compressionLevel]: ZSTD_LEVEL, [zlib.constants.ZSTD_c_checksumFlag]: 1 },
};

export function compressFrame(raw) {
  // Output of one call in one buffer of zstd's worst case for this input: no concatenation of 16 KiB pieces.
  return zlib.zstdCompressSync(raw, { ...ZSTD_OPTIONS, chunkSize: raw.length + (raw.length >> 7) + 4 * KiB });
}

/**
 * A stored frame back to its raw bytes; `rawLength` is what the index records, so a damaged or
 * hostile frame cannot make it allocate more (and the frame's own checksum is checked by zstd).
 */
export function decompressFrame(frame, rawLength) {
  // One output buffer of the recorded size: the default 16 KiB pieces, concatenated, cost more than the decompression.
  const out = zlib.zstdDecompressSync(frame, { maxOutputLength: Math.max(rawLength, 1), chunkSize: Math.max(rawLength, 64) });
  if (out.length !== rawLength) throw new Error(`frame decompressed to ${out.length} bytes, the index records ${rawLength}`);
  return out;
}

/**
 * Reads chunks out of packs where the index places them, each checked against its id before it is
 * returned. The last frame read is kept: chunks that follow each other in a file mostly share one.
 * `readFrame(pack, offset, length)` returns a frame's stored bytes (fewer when the pack is short).
 * Every failure is an Error with code 'checksum_mismatch' that names the pack.
 */
export function createChunkReader(key, readFrame) {
  let at = '';
  let raw = null;
  return (pack, loc) => {
    const frameAt = `${pack}:${loc.frameOffset}`;
    if (frameAt !== at) {
      at = '';
      const stored = readFrame(pack, loc.frameOffset, loc.frameLength);
      if (stored.length !== loc.frameLength) throw damaged(`pack ${pack} is shorter than the index says`);
      try {
        raw = decompressFrame(stored, loc.frameRawLength);
      } catch (err) {
        throw damaged(`a frame of pack ${pack} does not decompress: ${err.message}`);
      }
      at = frameAt;
    }
    const data = raw.subarray(loc.chunkOffset, loc.chunkOffset + loc.length);
    if (data.length !== loc.length || !chunkId(key, data).equals(Buffer.from(loc.id))) {
      throw damaged(`chunk ${Buffer.from(loc.id).toString('hex')} in pack ${pack} does not match its id`);
    }
    return data;
  };
}

function damaged(message) {
  return Object.assign(new Error(message), { code: 'checksum_mismatch' });
}
