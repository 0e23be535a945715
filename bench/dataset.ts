import { createCipheriv, createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/**
 * A deterministic mixed data set: per GiB, 20,000 small files of 1-64 KiB (half text-like, half
 * random) and three large files (random, text-like, and alternating 1 MiB blocks of both) that
 * fill the rest. The same seed always yields the same bytes, so runs are comparable.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const SMALL_PER_GIB = 20_000;
const LARGE_PER_GIB = 3;
const FILES_PER_DIR = 250;
const CORPUS_BYTES = 8 * MiB;
const WRITE_CHUNK = 4 * MiB;

export interface DatasetSummary {
  totalBytes: number;
  smallFiles: number;
  smallBytes: number;
  largeFiles: number;
  largeBytes: number;
  seconds: number;
}

/** mulberry32: small, fast and good enough for sizes and choices. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Incompressible bytes: an AES-128-CTR keystream keyed by (seed, label). */
class RandomSource {
  private readonly cipher;
  private readonly zeros = Buffer.alloc(WRITE_CHUNK);

  constructor(seed: number, label: string) {
    const key = createHash('sha256').update(`caged-bench:${seed}:${label}`).digest().subarray(0, 16);
    this.cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  }

  next(n: number): Buffer {
    const out: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const k = Math.min(left, this.zeros.length);
      out.push(this.cipher.update(this.zeros.subarray(0, k)));
      left -= k;
    }
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }
}

/**
 * Text-like bytes: log lines, prose and code-ish lines over a Zipf-skewed vocabulary of made-up
 * words, which zstd -1 compresses roughly 3-4x, like real text. Files take slices of a fixed
 * corpus at random offsets.
 */
function buildCorpus(seed: number): Buffer {
  const rnd = prng(seed ^ 0x5eed);
  const syllables = ['ka', 'lo', 'mi', 'ne', 'ru', 'sa', 'ti', 'vo', 'ze', 'pa', 'qu', 'er', 'an', 'is', 'on', 'st', 'ch', 'or', 'al', 'en', 'ex', 'fi', 'gu', 'ho'];
  const words: string[] = [];
  for (let i = 0; i < 4096; i++) {
    let w = '';
    const n = 1 + Math.floor(rnd() * 4);
    for (let j = 0; j < n; j++) w += syllables[Math.floor(rnd() * syllables.length)];
    words.push(w);
  }
  const word = () => words[Math.floor(words.length * rnd() ** 3)]!;
  const levels = ['INFO', 'WARN', 'DEBUG', 'ERROR'];
  const parts: string[] = [];
  let size = 0;
  let t = 1_700_000_000_000;
  while (size < CORPUS_BYTES) {
    const kind = rnd();
    let line: string;
    if (kind < 0.4) {
      t += Math.floor(rnd() * 5000);
      const fields: string[] = [];
      const nf = 2 + Math.floor(rnd() * 5);
      for (let i = 0; i < nf; i++) fields.push(`${word()}=${rnd() < 0.5 ? Math.floor(rnd() * 100_000) : word()}`);
      line = `${new Date(t).toISOString()} ${levels[Math.floor(rnd() ** 2 * 4)]} [${word()}.${word()}] ${word()} ${word()} ${fields.join(' ')}`;
    } else if (kind < 0.75) {
      const n = 6 + Math.floor(rnd() * 14);
      const ws: string[] = [];
      for (let i = 0; i < n; i++) ws.push(word());
      line = ws.join(' ') + (rnd() < 0.3 ? ',' : '.');
      line = line[0]!.toUpperCase() + line.slice(1);
    } else {
      const indent = '  '.repeat(Math.floor(rnd() * 4));
      line = `${indent}${rnd() < 0.5 ? 'const' : 'return'} ${word()}_${word()} = ${word()}(${word()}, ${Math.floor(rnd() * 1000)});`;
    }
    parts.push(line);
    size += line.length + 1;
  }
  return Buffer.from(parts.join('\n') + '\n', 'latin1').subarray(0, CORPUS_BYTES);
}

class TextSource {
  constructor(
    private readonly corpus: Buffer,
    private readonly rnd: () => number,
  ) {}

  next(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const seg = Math.min(n - at, 4 * KiB + Math.floor(this.rnd() * 60 * KiB));
      const from = Math.floor(this.rnd() * (this.corpus.length - seg));
      this.corpus.copy(out, at, from, from + seg);
      at += seg;
    }
    return out;
  }
}

/** Writes the data set for `gib` GiB under dir (which must exist); returns what it wrote. */
export function generateDataset(dir: string, gib: number, seed = 1): DatasetSummary {
  const started = performance.now();
  const target = Math.round(gib * GiB);
  const rnd = prng(seed);
  const text = new TextSource(buildCorpus(seed), prng(seed ^ 0x7e47));
  const random = new RandomSource(seed, 'small');

  const smallFiles = Math.round(SMALL_PER_GIB * gib);
  let smallBytes = 0;
  const smallDir = path.join(dir, 'small');
  for (let i = 0; i < smallFiles; i++) {
    const sub = path.join(smallDir, `d${String(Math.floor(i / FILES_PER_DIR)).padStart(4, '0')}`);
    if (i % FILES_PER_DIR === 0) fs.mkdirSync(sub, { recursive: true });
    const size = KiB + Math.floor(rnd() * 63 * KiB);
    const isText = rnd() < 0.5;
    const name = `f${String(i).padStart(6, '0')}.${isText ? 'txt' : 'bin'}`;
    fs.writeFileSync(path.join(sub, name), isText ? text.next(size) : random.next(size));
    smallBytes += size;
  }

  const largeFiles = Math.max(1, Math.round(LARGE_PER_GIB * gib));
  const largeTotal = Math.max(0, target - smallBytes);
  const largeDir = path.join(dir, 'large');
  fs.mkdirSync(largeDir, { recursive: true });
  const kinds = ['random', 'text', 'mixed'] as const;
  let largeBytes = 0;
  for (let i = 0; i < largeFiles; i++) {
    const size = i === largeFiles - 1 ? largeTotal - largeBytes : Math.floor(largeTotal / largeFiles);
    const kind = kinds[i % kinds.length]!;
    const src = new RandomSource(seed, `large-${i}`);
    const fd = fs.openSync(path.join(largeDir, `${kind}-${String(i).padStart(2, '0')}.dat`), 'w');
    try {
      let written = 0;
      let block = 0;
      while (written < size) {
        const n = Math.min(WRITE_CHUNK, size - written);
        let buf: Buffer;
        if (kind === 'random') buf = src.next(n);
        else if (kind === 'text') buf = text.next(n);
        else {
          // Alternating 1 MiB blocks of text and random bytes.
          const parts: Buffer[] = [];
          for (let at = 0; at < n; at += MiB) parts.push((block++ & 1 ? src : text).next(Math.min(MiB, n - at)));
          buf = Buffer.concat(parts);
        }
        fs.writeSync(fd, buf);
        written += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    largeBytes += size;
  }
  return {
    totalBytes: smallBytes + largeBytes,
    smallFiles,
    smallBytes,
    largeFiles,
    largeBytes,
    seconds: (performance.now() - started) / 1000,
  };
}
