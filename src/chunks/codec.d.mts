export declare const SMALL_FILE_BYTES: number;
export declare const MIN_CHUNK_BYTES: number;
export declare const AVG_CHUNK_BYTES: number;
export declare const MAX_CHUNK_BYTES: number;
export declare const SHARED_FRAME_BELOW: number;
export declare const FRAME_BYTES: number;
export declare const ZSTD_LEVEL: number;
export declare const CHUNK_ID_BYTES: number;
export declare function chunkId(key: Buffer, data: Uint8Array): Buffer;
export declare function gearTable(key: Buffer): Int32Array;
export type Cutter = (buf: Uint8Array, start: number, end: number, eof: boolean) => number;
export declare function createCutter(gear: Int32Array): Cutter;
export declare function chunkEnds(cut: Cutter, buf: Uint8Array): number[];
export declare function compressFrame(raw: Uint8Array): Buffer;
export declare function decompressFrame(frame: Uint8Array, rawLength: number): Buffer;
export interface ChunkLocationInFrame {
  frameOffset: number;
  frameLength: number;
  frameRawLength: number;
  chunkOffset: number;
  length: number;
  id: Uint8Array;
}
export type ChunkReader = (pack: string, loc: ChunkLocationInFrame) => Buffer;
export declare function createChunkReader(key: Buffer, readFrame: (pack: string, offset: number, length: number) => Buffer): ChunkReader;
