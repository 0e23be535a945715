import zlib from 'node:zlib';

/**
 * A pack: zstd frames back to back (each frame holds one chunk, or several small ones), then a
 * trailer that lists the frames and the chunks in them, then a 16-byte footer: the magic
 * `CGDPACK1`, the trailer's length and its CRC-32 (little endian). The catalog's index is what
 * reads use; the trailer makes a pack self-describing, so the consistency checker can compare
 * the two and the index could be rebuilt from the packs.
 */
export const PACK_TARGET_BYTES = 32 * 1024 * 1024;
const MAGIC = Buffer.from('CGDPACK1');
export const FOOTER_BYTES = 16;

export interface PackFrame {
  offset: number;
  length: number;
  rawLength: number;
  /** [chunk id (hex), offset in the frame's raw bytes, length]. */
  chunks: [string, number, number][];
}

export function encodeTrailer(frames: PackFrame[]): Buffer {
  const body = zlib.zstdCompressSync(Buffer.from(JSON.stringify({ v: 1, frames: frames.map((f) => [f.offset, f.length, f.rawLength, f.chunks]) })));
  const footer = Buffer.alloc(FOOTER_BYTES);
  MAGIC.copy(footer, 0);
  footer.writeUInt32LE(body.length, 8);
  footer.writeUInt32LE(zlib.crc32(body), 12);
  return Buffer.concat([body, footer]);
}

/** The trailer's length from a pack's last 16 bytes; throws when they are not a caged pack footer. */
export function trailerLength(footer: Buffer): number {
  if (footer.length !== FOOTER_BYTES || !footer.subarray(0, 8).equals(MAGIC)) throw new Error('not a caged pack (no footer)');
  return footer.readUInt32LE(8);
}

export function decodeTrailer(body: Buffer, footer: Buffer): PackFrame[] {
  if (zlib.crc32(body) !== footer.readUInt32LE(12)) throw new Error('pack trailer checksum mismatch');
  const parsed = JSON.parse(zlib.zstdDecompressSync(body, { maxOutputLength: 64 * 1024 * 1024 }).toString('utf8')) as { v: number; frames: [number, number, number, [string, number, number][]][] };
  if (parsed.v !== 1) throw new Error(`pack trailer version ${parsed.v}`);
  return parsed.frames.map(([offset, length, rawLength, chunks]) => ({ offset, length, rawLength, chunks }));
}
