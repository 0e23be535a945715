import zlib from 'node:zlib';
import { MiB } from './wait.js';

// ---- a raw ustar writer, so a corpus can hold what real tar tools refuse to produce ----

export interface RawEntry {
  name: string;
  /** ustar typeflag: '0' file, '1' hardlink, '2' symlink, '3' char dev, '4' block dev, '5' dir, '6' fifo, ... */
  type?: string;
  mode?: number;
  linkname?: string;
  data?: Buffer;
  /** Declared size when it should differ from data.length. */
  size?: number;
  /** Raw 12-byte size field, for encodings the octal writer cannot express. */
  sizeField?: Buffer;
  /** PAX records emitted in an 'x' header right before this entry. */
  pax?: Record<string, string>;
}

function putString(buf: Buffer, off: number, len: number, value: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > len) throw new Error(`field too long: ${value}`);
  bytes.copy(buf, off);
}

function putOctal(buf: Buffer, off: number, len: number, value: number): void {
  putString(buf, off, len, value.toString(8).padStart(len - 1, '0') + '\0');
}

export function ustarHeader(e: { name: string; type: string; mode: number; size: number; linkname?: string; sizeField?: Buffer }): Buffer {
  const h = Buffer.alloc(512);
  putString(h, 0, 100, e.name);
  putOctal(h, 100, 8, e.mode);
  putOctal(h, 108, 8, 0);
  putOctal(h, 116, 8, 0);
  if (e.sizeField) e.sizeField.copy(h, 124);
  else putOctal(h, 124, 12, e.size);
  putOctal(h, 136, 12, 1_700_000_000);
  h.fill(0x20, 148, 156);
  putString(h, 156, 1, e.type);
  putString(h, 157, 100, e.linkname ?? '');
  putString(h, 257, 6, 'ustar\0');
  putString(h, 263, 2, '00');
  putString(h, 265, 32, 'root');
  putString(h, 297, 32, 'root');
  return withChecksum(h);
}

/** Writes the header's checksum field (after a test changed other bytes); `format` shapes the field. */
export function withChecksum(h: Buffer, format = (sum: number) => sum.toString(8).padStart(6, '0') + '\0 '): Buffer {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of h) sum += byte;
  putString(h, 148, 8, format(sum));
  return h;
}

export function padded(data: Buffer): Buffer {
  const rem = data.length % 512;
  return rem === 0 ? data : Buffer.concat([data, Buffer.alloc(512 - rem)]);
}

export function paxRecord(key: string, value: string): string {
  return withPaxLength(` ${key}=${value}\n`);
}

/** A PAX record of exactly this text after its length prefix (which counts itself). */
export function withPaxLength(rest: string): string {
  const bytes = Buffer.byteLength(rest);
  let len = bytes + 1;
  while (String(len).length + bytes !== len) len = String(len).length + bytes;
  return `${len}${rest}`;
}

/** An uncompressed tar stream of exactly these entries (and, unless eof is false, the end-of-archive marker). */
export function rawTar(entries: RawEntry[], opts: { eof?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (e.pax) {
      const body = Buffer.from(Object.entries(e.pax).map(([k, v]) => paxRecord(k, v)).join(''), 'utf8');
      parts.push(ustarHeader({ name: 'PaxHeader/entry', type: 'x', mode: 0o644, size: body.length }), padded(body));
    }
    const type = e.type ?? '0';
    const data = e.data ?? Buffer.alloc(0);
    parts.push(
      ustarHeader({
        name: e.name,
        type,
        mode: e.mode ?? (type === '5' ? 0o755 : 0o644),
        size: e.size ?? data.length,
        linkname: e.linkname,
        sizeField: e.sizeField,
      }),
      padded(data),
    );
  }
  if (opts.eof !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export const gz = (buf: Buffer, level = 6) => zlib.gzipSync(buf, { level });

/** gzip of `zeros` zero bytes written after `prefix`, without holding the zeros in memory. */
export async function gzipWithZeros(prefix: Buffer, zeros: number): Promise<Buffer> {
  const out: Buffer[] = [];
  const gzip = zlib.createGzip({ level: 1 });
  gzip.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((resolve, reject) => gzip.on('end', resolve).on('error', reject));
  gzip.write(prefix);
  const block = Buffer.alloc(MiB);
  for (let left = zeros; left > 0; left -= block.length) {
    if (!gzip.write(left >= block.length ? block : block.subarray(0, left))) await new Promise((r) => gzip.once('drain', r));
  }
  gzip.end();
  await done;
  return Buffer.concat(out);
}
