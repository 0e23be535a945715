import { Context } from '@temporalio/activity';
import type { CatalogDb } from '../catalog/db.js';
import { setOperationProgress } from '../catalog/operations.js';
import type { RetryingJson } from '../catalog/schema.js';
import type { RetryInfo } from '../storage/blob-store.js';

/**
 * How often a running data mover heartbeats and writes its progress to the catalog: well inside
 * every heartbeat timeout (15 s), and as often as the worker sends heartbeats to the server anyway.
 */
const TICK_MS = 1000;

/**
 * Where a data mover reports what it has done. The activity that runs the mover makes it, for the
 * operation and the step the workflow named; the mover only counts, and runs its work under it.
 */
export interface ProgressSink {
  /** Counts bytes moved; cheap, called per chunk. */
  add(n: number): void;
  readonly bytes: number;
  /** Hooks for store calls, so retries of a storage request show on the operation. */
  readonly storeHooks: { onRetry: (info: RetryInfo) => void; onRecovered: () => void };
  /** A small fact for the next attempt (a multipart upload's id), sent with every heartbeat; `now` heartbeats at once. */
  note(key: string, value: unknown, now?: boolean): void;
  /** Runs the work under heartbeats and progress writes once a second. */
  during<T>(work: () => Promise<T>): Promise<T>;
  /** Waits for the last progress write and records the final count. */
  flush(): Promise<void>;
}

/**
 * Counts the bytes a data mover has moved and reports them on a clock, not per chunk: add() runs
 * once per chunk and only counts, while during() heartbeats and writes the operation's catalog row
 * once a second for as long as the work runs, whether bytes move or not (tar still extracting what
 * was already hashed, the final fsync of a large archive), so status requests see live progress
 * and a slow phase never looks like a dead worker.
 */
export function progressReporter(db: CatalogDb, operationId: string, step: string, extra?: (bytes: number) => Promise<void>): ProgressSink {
  let bytes = 0;
  let writing: Promise<void> = Promise.resolve();
  let retrying: RetryingJson | null = null;
  /** Small facts a later attempt of the activity needs (a multipart upload's id), sent with every heartbeat. */
  const notes: Record<string, unknown> = {};
  const report = () => {
    const b = bytes;
    writing = writing
      .then(() => setOperationProgress(db, operationId, { step, bytesDone: b }))
      .then(() => extra?.(b))
      .catch(() => {});
  };
  const details = () => ({ step, bytes, ...notes, ...(retrying && { retrying }) });
  const setRetrying = (r: RetryingJson | null) => {
    if (r === null && retrying === null) return;
    retrying = r;
    writing = writing.then(() => setOperationProgress(db, operationId, { retrying: r })).catch(() => {});
  };
  return {
    /**
     * Hooks for store calls: each retry of a storage request shows as progress.retrying on the
     * operation's record (and in its heartbeat) until a request succeeds again.
     */
    storeHooks: {
      onRetry: (info: RetryInfo) => setRetrying({ attempt: info.attempt, error: info.error, next_at: info.nextAt.toISOString() }),
      onRecovered: () => setRetrying(null),
    },
    /** Adds a fact to every heartbeat from now on; with `now`, heartbeats it at once (the SDK throttles). */
    note(key: string, value: unknown, now = false) {
      notes[key] = value;
      if (now) Context.current().heartbeat(details());
    },
    add(n: number) {
      bytes += n;
    },
    get bytes() {
      return bytes;
    },
    during<T>(work: () => Promise<T>): Promise<T> {
      return keepHeartbeating(() => {
        report();
        return details();
      }, work);
    },
    async flush() {
      await writing;
      retrying = null;
      await setOperationProgress(db, operationId, { step, bytesDone: bytes, retrying: null }).catch(() => {});
    },
  };
}

/** Heartbeats at once and then every second while `work` runs, with what `details` says at each beat. */
export async function keepHeartbeating<T>(details: () => unknown, work: () => Promise<T>): Promise<T> {
  const ctx = Context.current();
  ctx.heartbeat(details());
  const timer = setInterval(() => ctx.heartbeat(details()), TICK_MS);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
