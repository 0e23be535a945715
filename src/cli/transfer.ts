import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { Readable, Transform, pipeline as pipelineCb } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SingleBar } from 'cli-progress';
import type { ApiClient } from './api-client.js';
import { formatBytes } from './format.js';

/** A byte-counting pass-through that drives a progress bar when someone is watching stderr. */
function meter(label: string, total: number | undefined): { counter: Transform; stop: () => void } {
  const bar =
    process.stderr.isTTY && total
      ? new SingleBar({
          stream: process.stderr,
          format: `${label} [{bar}] {percentage}% {doneFmt}/{totalFmt}`,
          hideCursor: true,
          clearOnComplete: true,
        })
      : undefined;
  const totalFmt = formatBytes(total ?? 0);
  bar?.start(total ?? 0, 0, { doneFmt: formatBytes(0), totalFmt });
  let done = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      bar?.update(done, { doneFmt: formatBytes(done), totalFmt });
      cb(null, chunk);
    },
  });
  return { counter, stop: () => bar?.stop() };
}

/**
 * Streams a download to `<file>.partial`, hashing on the way, and only renames it into place once the
 * checksum matches: a half-written or corrupted file never sits under the name the user asked for.
 */
export async function downloadVerified(client: ApiClient, url: string, file: string, sha256: string): Promise<number> {
  const res = await client.download(url);
  const length = Number(res.headers['content-length']) || undefined;
  const partial = `${file}.partial`;
  const hash = createHash('sha256');
  const { counter, stop } = meter('downloading', length);
  let bytes = 0;
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      cb(null, chunk);
    },
  });
  try {
    await pipeline(res, hasher, counter, createWriteStream(partial));
    stop();
    const actual = hash.digest('hex');
    if (actual !== sha256.toLowerCase()) throw new Error(`checksum mismatch: expected ${sha256}, got ${actual}`);
    await rename(partial, file);
    return bytes;
  } catch (err) {
    stop();
    await rm(partial, { force: true });
    throw err;
  }
}

/** Opens a file for upload with its size, which the API needs up front to refuse oversized imports early. */
export async function uploadStream(file: string): Promise<{ body: Readable; size: number; done: () => void }> {
  const info = await stat(file);
  if (!info.isFile()) throw new Error(`not a file: ${file}`);
  const size = info.size;
  const { counter, stop } = meter('uploading', size);
  // pipeline rather than pipe: a read error must abort the upload instead of leaving it hanging.
  const body = pipelineCb(createReadStream(file), counter, () => {});
  return { body, size, done: stop };
}
