import { setTimeout as sleep } from 'node:timers/promises';
import { PassThrough, type Readable } from 'node:stream';
import type { BlobInfo, BlobStore, CallOptions, IncompleteUpload, PutOptions, RetryInfo, RetryRunner } from './blob-store.js';
import { classifyStorageError, describeStorageError, permanentStorageError, unavailableStorageError } from './errors.js';

export interface RetryPolicy {
  /** Transient failures of one request are retried for this long in all, then it fails as storage_unavailable. */
  totalMs: number;
  /** The first backoff; each next one doubles, up to maxDelayMs, with jitter. */
  baseMs?: number;
  maxDelayMs?: number;
  /** Told of every retry of every call (logging). */
  onRetry?: (info: RetryInfo) => void;
  /** For tests: the jitter's source. */
  random?: () => number;
}

export interface RetryHooks {
  signal?: AbortSignal;
  onRetry?: (info: RetryInfo) => void;
  onRecovered?: () => void;
}

const DEFAULT_BASE_MS = 250;
const DEFAULT_MAX_DELAY_MS = 15_000;

/**
 * Runs `fn` until it succeeds, retrying only what classifyStorageError calls transient, with
 * exponential backoff and jitter, for at most policy.totalMs. Permanent failures become
 * CagedError('storage_error') at once; transient ones past the bound CagedError('storage_unavailable').
 * Anything else (a CagedError, a cancellation, the body's own error) passes through unchanged.
 * The signal cuts a backoff short with its reason.
 */
export async function withRetry<T>(what: string, fn: () => Promise<T>, policy: RetryPolicy, hooks: RetryHooks = {}): Promise<T> {
  const started = Date.now();
  const base = policy.baseMs ?? DEFAULT_BASE_MS;
  const cap = policy.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
  const random = policy.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    hooks.signal?.throwIfAborted();
    try {
      const out = await fn();
      if (attempt > 1) hooks.onRecovered?.();
      return out;
    } catch (err) {
      if (hooks.signal?.aborted) throw hooks.signal.reason;
      const kind = classifyStorageError(err);
      if (kind === 'other') throw err;
      if (kind === 'permanent') throw permanentStorageError(err, what);
      // "Equal jitter": half the exponential delay, plus up to as much again at random.
      const exp = Math.min(cap, base * 2 ** (attempt - 1));
      const delay = Math.round(exp / 2 + (random() * exp) / 2);
      const elapsed = Date.now() - started;
      if (elapsed + delay > policy.totalMs) throw unavailableStorageError(err, what, attempt, elapsed / 1000);
      const info: RetryInfo = { attempt, error: describeStorageError(err), nextAt: new Date(Date.now() + delay), what };
      policy.onRetry?.(info);
      hooks.onRetry?.(info);
      await sleep(delay, undefined, { signal: hooks.signal });
    }
  }
}

/**
 * Any BlobStore, with its failures classified and its transient ones retried (restic's retry
 * backend, in spirit). Idempotent calls (get, head, delete, list, abortIncomplete) are retried
 * whole; put() cannot be (its body is a stream read once), so the inner store runs each of its
 * requests through PutOptions.retry, which repeats a part from the buffer it still holds.
 */
export class RetryingBlobStore implements BlobStore {
  readonly kind: BlobStore['kind'];
  readonly local: BlobStore['local'];
  readonly presignGet: BlobStore['presignGet'];
  readonly listIncomplete: BlobStore['listIncomplete'];

  constructor(
    readonly inner: BlobStore,
    readonly policy: RetryPolicy,
  ) {
    this.kind = inner.kind;
    this.local = inner.local;
    this.presignGet = inner.presignGet?.bind(inner);
    const listIncomplete = inner.listIncomplete?.bind(inner);
    this.listIncomplete = listIncomplete && ((prefix) => this.resumableList(`ListMultipartUploads ${prefix}`, listIncomplete(prefix)[Symbol.asyncIterator](), () => listIncomplete(prefix), (u) => `${u.key}\0${u.uploadId}`));
  }

  /** The runner a caller hands to code that makes its own requests (the s3 store's parts). */
  runner(hooks: RetryHooks = {}): RetryRunner {
    return (what, fn) => withRetry(what, fn, this.policy, hooks);
  }

  put(key: string, body: Readable, opts: PutOptions = {}): Promise<{ size: number }> {
    return this.inner.put(key, body, { ...opts, retry: this.runner(opts) });
  }

  /**
   * The object's body; a body that breaks off with a transient error (a reset, a timeout) is
   * resumed where it stopped with a ranged GET, retried like any request.
   */
  async get(key: string, opts: CallOptions = {}): Promise<Readable> {
    const open = (offset: number) =>
      withRetry(`GetObject ${key}${offset ? ` from byte ${offset}` : ''}`, () => this.inner.get(key, { signal: opts.signal, offset: (opts.offset ?? 0) + offset }), this.policy, opts);
    const first = await open(0);
    const out = new PassThrough({ readableHighWaterMark: first.readableHighWaterMark, writableHighWaterMark: first.readableHighWaterMark });
    void (async () => {
      let source = first;
      let offset = 0;
      for (;;) {
        try {
          for await (const chunk of source) {
            offset += (chunk as Buffer).byteLength;
            if (!out.write(chunk) && !(await drained(out))) return source.destroy();
          }
          out.end();
          return;
        } catch (err) {
          source.destroy();
          if (out.destroyed) return;
          if (opts.signal?.aborted || classifyStorageError(err) !== 'transient') return void out.destroy(err as Error);
          try {
            source = await open(offset);
          } catch (reopenErr) {
            return void out.destroy(reopenErr as Error);
          }
        }
      }
    })();
    return out;
  }

  head(key: string): Promise<BlobInfo | null> {
    return withRetry(`HeadObject ${key}`, () => this.inner.head(key), this.policy);
  }

  delete(key: string): Promise<void> {
    return withRetry(`DeleteObject ${key}`, () => this.inner.delete(key), this.policy);
  }

  abortIncomplete(key: string, uploadIds?: readonly string[]): Promise<number> {
    return withRetry(`AbortMultipartUpload ${key}`, () => this.inner.abortIncomplete(key, uploadIds), this.policy);
  }

  list(prefix: string): AsyncIterable<BlobInfo> {
    return this.resumableList(`ListObjects ${prefix}`, this.inner.list(prefix)[Symbol.asyncIterator](), () => this.inner.list(prefix), (b) => b.key);
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }

  /**
   * A listing retried where it broke off: stores list in key order, so a new listing skips what
   * was already yielded (up to and including the last identity seen).
   */
  private async *resumableList<T>(what: string, first: AsyncIterator<T>, again: () => AsyncIterable<T>, id: (t: T) => string): AsyncGenerator<T> {
    let it: AsyncIterator<T> = first;
    let last: string | undefined;
    let skipping = false;
    for (;;) {
      const next = await withRetry(
        what,
        async () => {
          try {
            if (!it) it = again()[Symbol.asyncIterator]();
            for (;;) {
              const r = await it.next();
              if (r.done || !skipping) return r;
              if (id(r.value) === last) skipping = false;
              else if (last !== undefined && id(r.value) > last) {
                skipping = false;
                return r;
              }
            }
          } catch (err) {
            // The next attempt starts a new listing and skips what was yielded.
            it = undefined as unknown as AsyncIterator<T>;
            skipping = last !== undefined;
            throw err;
          }
        },
        this.policy,
      );
      if (next.done) return;
      last = id(next.value);
      yield next.value;
    }
  }
}

/** Waits until `out` wants more; false when it was destroyed instead (its reader went away). */
function drained(out: PassThrough): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean) => () => {
      out.off('drain', onDrain);
      out.off('close', onClose);
      resolve(ok);
    };
    const onDrain = done(true);
    const onClose = done(false);
    out.once('drain', onDrain);
    out.once('close', onClose);
  });
}
