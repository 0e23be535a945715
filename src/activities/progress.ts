import { Context } from '@temporalio/activity';
import type { CatalogDb } from '../catalog/db.js';
import { setOperationProgress } from '../catalog/operations.js';

/**
 * Heartbeats the byte count on every chunk (the SDK throttles the RPCs) and writes it to the
 * operation's catalog row at most once a second, so status requests see live progress.
 */
export function progressReporter(db: CatalogDb, operationId: string, step: string, extra?: (bytes: number) => Promise<void>) {
  const ctx = Context.current();
  let bytes = 0;
  let lastWrite = 0;
  let writing: Promise<void> = Promise.resolve();
  return {
    add(n: number) {
      bytes += n;
      ctx.heartbeat({ step, bytes });
      const now = Date.now();
      if (now - lastWrite >= 1000) {
        lastWrite = now;
        const b = bytes;
        writing = writing
          .then(() => setOperationProgress(db, operationId, { step, bytesDone: b }))
          .then(() => extra?.(b))
          .catch(() => {});
      }
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
