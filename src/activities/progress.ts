import { Context } from '@temporalio/activity';
import type { CatalogDb } from '../catalog/db.js';
import { setOperationProgress } from '../catalog/operations.js';

const HEARTBEAT_INTERVAL_MS = 250;
const CATALOG_INTERVAL_MS = 1000;

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
    async flush() {
      await writing;
      await setOperationProgress(db, operationId, { step, bytesDone: bytes }).catch(() => {});
    },
  };
}

/** Heartbeats once a second while `work` runs: for steps with no bytes to count (stopping, syncing). */
export async function heartbeatWhile<T>(step: string, work: Promise<T>): Promise<T> {
  const ctx = Context.current();
  ctx.heartbeat({ step });
  const timer = setInterval(() => ctx.heartbeat({ step }), 1000);
  try {
    return await work;
  } finally {
    clearInterval(timer);
  }
}
