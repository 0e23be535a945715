import { Context } from '@temporalio/activity';
import type { CatalogDb } from '../catalog/db.js';
import { setOperationProgress } from '../catalog/operations.js';

const HEARTBEAT_INTERVAL_MS = 250;
const CATALOG_INTERVAL_MS = 1000;
/** Well inside every heartbeat timeout (15 s), and what the worker flushes to the server at most anyway. */
const KEEPALIVE_MS = 1000;

/**
 * Counts the bytes a data mover has moved. add() runs once per chunk, so it only counts: the
 * heartbeat goes out at most every 250 ms (one per 64 KiB chunk cost more CPU than the hashing)
 * and the operation's catalog row is written at most once a second, so status requests see live
 * progress.
 */
export function progressReporter(db: CatalogDb, operationId: string, step: string, extra?: (bytes: number) => Promise<void>) {
  const ctx = Context.current();
  let bytes = 0;
  let lastBeat = 0;
  let lastWrite = 0;
  let writing: Promise<void> = Promise.resolve();
  return {
    add(n: number) {
      bytes += n;
      const now = Date.now();
      if (now - lastBeat < HEARTBEAT_INTERVAL_MS) return;
      lastBeat = now;
      ctx.heartbeat({ step, bytes });
      if (now - lastWrite < CATALOG_INTERVAL_MS) return;
      lastWrite = now;
      const b = bytes;
      writing = writing
        .then(() => setOperationProgress(db, operationId, { step, bytesDone: b }))
        .then(() => extra?.(b))
        .catch(() => {});
    },
    get bytes() {
      return bytes;
    },
    /** Runs the data movement, heartbeating at least once a second even while no bytes move. */
    during<T>(work: () => Promise<T>): Promise<T> {
      return keepHeartbeating(() => ({ step, bytes }), work);
    },
    async flush() {
      await writing;
      await setOperationProgress(db, operationId, { step, bytesDone: bytes }).catch(() => {});
    },
  };
}

/**
 * Heartbeats at least once a second while `work` runs. A heartbeat means "this worker is alive",
 * not "bytes moved": phases that move none (stopping processes, tar still extracting what was
 * already hashed, the final fsync of a large archive) must not look like a dead worker.
 */
export async function keepHeartbeating<T>(details: () => unknown, work: () => Promise<T>): Promise<T> {
  const ctx = Context.current();
  ctx.heartbeat(details());
  const timer = setInterval(() => ctx.heartbeat(details()), KEEPALIVE_MS);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
