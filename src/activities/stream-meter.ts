import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import type { Limits } from '../config.js';
import { CagedError } from '../shared/errors.js';

export interface MeterOptions {
  progress?: { add(n: number): void };
  /** Runs on every chunk with the bytes so far; an error it returns stops the stream. */
  check?: (bytes: number) => Error | undefined;
  /** Runs before a chunk is passed on (tests arm it to fail or slow a step). */
  hook?: (bytes: number) => void | Promise<void>;
}

/**
 * What every data mover counts: it hashes and counts what flows, reports progress, enforces limits
 * per chunk and remembers the first failure (what follows it, such as a broken pipe or an aborted
 * upload, is noise). Streams pass through `stream`; a mover that reads a file itself calls `take`.
 */
export function createMeter(o: MeterOptions = {}) {
  const hash = createHash('sha256');
  let bytes = 0;
  let firstError: Error | undefined;
  const account = (chunk: Buffer): Error | undefined => {
    bytes += chunk.length;
    hash.update(chunk);
    o.progress?.add(chunk.length);
    return o.check?.(bytes);
  };
  const stream = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      const err = account(chunk);
      if (err) return cb(err);
      if (!o.hook) return cb(null, chunk);
      const at = bytes;
      const hook = o.hook;
      Promise.resolve()
        .then(() => hook(at))
        .then(() => cb(null, chunk), cb);
    },
  });
  stream.once('error', (err) => (firstError ??= err));
  return {
    stream,
    /** Accounts for a chunk outside the stream (the caller may reuse its buffer afterwards); rejects on a crossed limit or a failing hook. */
    async take(chunk: Buffer): Promise<void> {
      const err = account(chunk);
      if (err) throw (firstError ??= err);
      await o.hook?.(bytes);
    },
    get bytes() {
      return bytes;
    },
    get error() {
      return firstError;
    },
    digest: () => hash.digest('hex'),
  };
}

/**
 * The size limits a snapshot must stay within while it is written; `usedByOthers` is the account's
 * other bytes. `bytes` is the snapshot's size, `storedBytes` what it adds to the store (the same
 * for an archive; a chunked snapshot stores only its new chunks).
 */
export function snapshotSizeCheck(limits: Limits, usedByOthers?: number) {
  return (bytes: number, storedBytes = bytes): CagedError | undefined => {
    if (bytes > limits.maxSnapshotBytes) {
      return new CagedError('limit_exceeded', `limit snapshot_bytes exceeded: the snapshot passed ${limits.maxSnapshotBytes} bytes`, {
        limit: 'snapshot_bytes',
        max: limits.maxSnapshotBytes,
      });
    }
    if (usedByOthers !== undefined && usedByOthers + storedBytes > limits.maxAccountBytes) {
      return new CagedError('limit_exceeded', `limit account_bytes exceeded: the account would store more than ${limits.maxAccountBytes} bytes`, {
        limit: 'account_bytes',
        max: limits.maxAccountBytes,
      });
    }
    return undefined;
  };
}
