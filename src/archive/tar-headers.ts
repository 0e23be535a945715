/**
 * A second reading of a tar stream's headers, the way GNU tar reads them, for the import
 * validator to hold node-tar's reading against. Uploaded archives are checked with node-tar's
 * parser but extracted by GNU tar, and the two differ where the format is loose: node-tar splits
 * PAX records on newlines where GNU tar goes by their length prefix, lets a global header's
 * linkpath stand, lets the last of a PAX and a GNU long name win where GNU tar lets PAX win,
 * forces a directory's size to 0 where GNU tar skips what the header says, and ignores
 * GNU.sparse.* keys that make GNU tar write a file of another size under another name. Any of
 * those lets an archive show the validator one tree and GNU tar another (a device node, a setuid
 * file, a hardlink to a symlink). So this reader refuses what is ambiguous outright, and the
 * validator refuses any entry on which the two readings disagree.
 *
 * Written here, not taken from a library: the point is to be a reading independent of node-tar,
 * strict where GNU tar is lenient, and no kept package offers that.
 */

const BLOCK = 512;
/** node-tar's default limit for a metadata body (it ignores larger ones); ours refuses them. */
const MAX_META_BYTES = 1024 * 1024;
/** Typeflags whose size is a body that follows: regular files. Every other entry must say 0. */
const FILE_TYPES = new Set(['0', '7']);
/** A PAX key as GNU tar and node-tar both find it: GNU tar skips any blanks after the length, node-tar none. */
const PAX_KEY = /^[\x21-\x3c\x3e-\x7e]+$/;
const META_TYPES = new Set(['x', 'g', 'K', 'L']);

export interface ScannedEntry {
  /** The typeflag byte as a character, '\0' read as '0'. */
  type: string;
  path: string;
  linkpath: string;
  /** Body bytes that follow the header (PAX size where given). */
  size: number;
  /** The header's mode field: GNU tar takes no mode from PAX records. */
  mode: number;
}

export class AmbiguousHeader extends Error {}

interface Pending {
  paxPath?: string;
  paxLinkpath?: string;
  paxSize?: number;
  longPath?: string;
  longLinkpath?: string;
  sawPax: boolean;
}

/** Decodes a header string field as node-tar does: UTF-8, cut at the first NUL. */
function field(buf: Buffer, off: number, len: number): string {
  return buf.subarray(off, off + len).toString('utf8').replace(/\0.*/s, '');
}

/** A numeric field: octal digits (spaces and NULs around them), or base-256 when its top bit is set. */
function numeric(buf: Buffer, off: number, len: number, what: string): number {
  const raw = buf.subarray(off, off + len);
  if (raw[0]! & 0x80) {
    if (raw[0] === 0xff) throw new AmbiguousHeader(`negative ${what}`);
    let n = raw[0]! & 0x7f;
    for (let i = 1; i < raw.length; i++) {
      n = n * 256 + raw[i]!;
      if (!Number.isSafeInteger(n)) throw new AmbiguousHeader(`${what} too large`);
    }
    return n;
  }
  const text = raw.toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  // All NULs is 0 to every reader; blanks GNU tar reads as -1 (a mode of 07777) or refuses.
  if (text === '') {
    if (raw.includes(0x20)) throw new AmbiguousHeader(`${what} is blank`);
    return 0;
  }
  if (!/^[0-7]+$/.test(text)) throw new AmbiguousHeader(`${what} is not octal: ${JSON.stringify(text)}`);
  return parseInt(text, 8);
}

/**
 * The header checksum as GNU tar checks it: a strict octal field equal to the sum of the header's
 * bytes (the field itself counted as spaces), taken unsigned or signed. node-tar reads the field
 * leniently, so a header it accepts could be one GNU tar skips, reading what follows as headers.
 */
function checkSum(h: Buffer): void {
  const text = h.toString('latin1', 148, 156).replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (!/^[0-7]{1,7}$/.test(text)) throw new AmbiguousHeader(`header checksum field ${JSON.stringify(text)} is not octal`);
  const want = parseInt(text, 8);
  let unsigned = 8 * 0x20;
  let signed = 8 * 0x20;
  for (let i = 0; i < BLOCK; i++) {
    if (i >= 148 && i < 156) continue;
    unsigned += h[i]!;
    signed += h[i]! > 127 ? h[i]! - 256 : h[i]!;
  }
  if (want !== unsigned && want !== signed) throw new AmbiguousHeader(`header checksum of ${JSON.stringify(field(h, 0, 100))} does not match`);
}

/**
 * PAX records by their length prefix ("LEN KEY=VALUE\n"), as GNU tar reads them. A value with a
 * newline in it, a key given twice, or a GNU.* key (sparse maps, dump directories) is refused.
 */
function paxRecords(body: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  // Trailing NULs pad some writers' bodies.
  let end = body.length;
  while (end > 0 && body[end - 1] === 0) end--;
  while (pos < end) {
    const space = body.indexOf(0x20, pos);
    if (space < 0 || space - pos > 20) throw new AmbiguousHeader('malformed PAX record length');
    const lenText = body.toString('latin1', pos, space);
    if (!/^[1-9][0-9]*$/.test(lenText)) throw new AmbiguousHeader('malformed PAX record length');
    const len = Number(lenText);
    if (pos + len > end || body[pos + len - 1] !== 0x0a) throw new AmbiguousHeader('PAX record overruns its header or lacks its newline');
    const record = body.toString('utf8', space + 1, pos + len - 1);
    const eq = record.indexOf('=');
    if (eq <= 0) throw new AmbiguousHeader('PAX record without a key');
    const key = record.slice(0, eq);
    const value = record.slice(eq + 1);
    if (!PAX_KEY.test(key)) throw new AmbiguousHeader(`PAX record key ${JSON.stringify(key.slice(0, 64))} holds blanks or control characters`);
    if (value.includes('\n')) throw new AmbiguousHeader(`PAX record ${key} holds a newline`);
    if (out.has(key)) throw new AmbiguousHeader(`PAX record ${key} given twice`);
    if (key.startsWith('GNU.')) throw new AmbiguousHeader(`PAX record ${key} is not allowed (GNU sparse or dump data)`);
    // node-tar takes these from PAX records, GNU tar from the header alone.
    if (key === 'mode' || key === 'type') throw new AmbiguousHeader(`PAX record ${key} is not allowed`);
    out.set(key, value);
    pos += len;
  }
  return out;
}

/** Reads headers from the tar stream as it is pushed; entries come out in order via take(). */
export class TarHeaderScanner {
  private head = Buffer.alloc(BLOCK);
  private headFill = 0;
  private skip = 0;
  private meta?: { type: string; body: Buffer; fill: number };
  private pending: Pending = { sawPax: false };
  private ended = false;
  private readonly queue: ScannedEntry[] = [];

  /** The next entry read and not yet taken. */
  take(): ScannedEntry | undefined {
    return this.queue.shift();
  }

  get waiting(): number {
    return this.queue.length;
  }

  push(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length && !this.ended) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - off);
        if (this.meta) {
          const take = Math.min(n, this.meta.body.length - this.meta.fill);
          chunk.copy(this.meta.body, this.meta.fill, off, off + take);
          this.meta.fill += take;
          // GNU tar reads a long name from the whole padded block, up to a NUL: bytes in the
          // padding would lengthen the name it reads beyond the one node-tar reads.
          if ((this.meta.type === 'L' || this.meta.type === 'K') && !chunk.subarray(off + take, off + n).every((b) => b === 0)) {
            throw new AmbiguousHeader(`GNU long ${this.meta.type === 'L' ? 'name' : 'link name'} with data in its padding`);
          }
        }
        this.skip -= n;
        off += n;
        if (this.skip === 0 && this.meta) this.endMeta();
        continue;
      }
      const n = Math.min(BLOCK - this.headFill, chunk.length - off);
      chunk.copy(this.head, this.headFill, off, off + n);
      this.headFill += n;
      off += n;
      if (this.headFill === BLOCK) {
        this.headFill = 0;
        this.header(this.head);
      }
    }
  }

  private header(h: Buffer): void {
    if (h.every((b) => b === 0)) {
      // The end-of-archive marker: what follows is the validator's to judge.
      this.ended = true;
      return;
    }
    checkSum(h);
    // GNU tar takes the ustar prefix on the magic alone; node-tar also wants version "00".
    const ustar = h.toString('latin1', 257, 263) === 'ustar\0';
    if (ustar && h.toString('latin1', 263, 265) !== '00') {
      throw new AmbiguousHeader(`ustar header of ${JSON.stringify(field(h, 0, 100))} with version ${JSON.stringify(h.toString('latin1', 263, 265))}`);
    }
    let type = h[156] === 0 ? '0' : String.fromCharCode(h[156]!);
    const size = numeric(h, 124, 12, `size of ${JSON.stringify(field(h, 0, 100))}`);
    if (META_TYPES.has(type)) {
      if (type === 'g') throw new AmbiguousHeader('global PAX headers are not allowed');
      if (size > MAX_META_BYTES) throw new AmbiguousHeader(`metadata header of ${size} bytes`);
      if ((type === 'x' && this.pending.sawPax) || (type === 'L' && this.pending.longPath !== undefined) || (type === 'K' && this.pending.longLinkpath !== undefined)) {
        throw new AmbiguousHeader(`two ${type} headers for one entry`);
      }
      this.meta = { type, body: Buffer.alloc(size), fill: 0 };
      this.skip = Math.ceil(size / BLOCK) * BLOCK;
      if (this.skip === 0) this.endMeta();
      return;
    }
    const p = this.pending;
    this.pending = { sawPax: false };
    if (p.paxPath !== undefined && p.longPath !== undefined) throw new AmbiguousHeader('both a PAX path and a GNU long name for one entry');
    if (p.paxLinkpath !== undefined && p.longLinkpath !== undefined) throw new AmbiguousHeader('both a PAX linkpath and a GNU long link name for one entry');
    let path = field(h, 0, 100);
    // The POSIX ustar prefix (version "00", checked above), as node-tar reads it; GNU's own magic keeps other data there.
    if (ustar) {
      const prefix = h[475] !== 0 ? field(h, 345, 155) : field(h, 345, 130);
      if (prefix) path = `${prefix}/${path}`;
    }
    const bodySize = p.paxSize ?? size;
    const name = p.paxPath ?? p.longPath ?? path;
    // Old writers marked a directory as a file named with a trailing '/'. GNU tar takes any
    // regular type so (and skips no body); node-tar only '0' and '\0', and drops the size: only an
    // empty one reads the same to both, and a '7' not at all (the readings then differ).
    if ((type === '0' || type === '7') && name.endsWith('/')) {
      if (bodySize !== 0) throw new AmbiguousHeader(`file ${JSON.stringify(name)} named like a directory declares ${bodySize} bytes of data`);
      // A '7' so named then differs from node-tar's reading (a file), and is refused.
      type = '5';
    }
    if (!FILE_TYPES.has(type) && bodySize !== 0) {
      throw new AmbiguousHeader(`${JSON.stringify(name.slice(0, 200))}, an entry of type ${JSON.stringify(type)}, declares ${bodySize} bytes of data`);
    }
    const mode = numeric(h, 100, 8, `mode of ${JSON.stringify(name.slice(0, 200))}`);
    this.queue.push({ type, path: name, linkpath: p.paxLinkpath ?? p.longLinkpath ?? field(h, 157, 100), size: bodySize, mode });
    this.skip = Math.ceil(bodySize / BLOCK) * BLOCK;
  }

  private endMeta(): void {
    const { type, body } = this.meta!;
    this.meta = undefined;
    if (type === 'x') {
      this.pending.sawPax = true;
      const records = paxRecords(body);
      const size = records.get('size');
      if (size !== undefined) {
        if (!/^[0-9]{1,16}$/.test(size)) throw new AmbiguousHeader(`PAX size ${JSON.stringify(size)} is not a number`);
        this.pending.paxSize = Number(size);
      }
      if (records.has('path')) this.pending.paxPath = records.get('path');
      if (records.has('linkpath')) this.pending.paxLinkpath = records.get('linkpath');
    } else {
      const name = body.toString('utf8').replace(/\0.*/s, '');
      if (type === 'L') this.pending.longPath = name;
      else this.pending.longLinkpath = name;
    }
  }
}
