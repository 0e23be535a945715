import type { FileHandle } from 'node:fs/promises';

/**
 * The kernel keeps gigabytes of dirty pages before it starts writeback on its own, so a single
 * fsync at the end would write a whole object while nothing else happens. Starting writeback
 * (fdatasync in the background) every 32 MiB overlaps the disk with the producer and leaves the
 * final fsync a tail.
 */
const WRITEBACK_EVERY_BYTES = 32 * 1024 * 1024;

/** Tracks bytes written to `handle`'s file and starts writeback in the background as they pass 32 MiB. */
export function backgroundWriteback(handle: FileHandle) {
  let unflushed = 0;
  let flushing: Promise<void> | undefined;
  return {
    wrote(bytes: number): void {
      unflushed += bytes;
      if (unflushed < WRITEBACK_EVERY_BYTES || flushing) return;
      unflushed = 0;
      flushing = handle.datasync().finally(() => (flushing = undefined));
    },
    /** Waits for a writeback in flight; rejects with its error. */
    async settle(): Promise<void> {
      await flushing;
    },
    /** Waits for a writeback in flight, ignoring its error (on the way out after a failure). */
    async quiesce(): Promise<void> {
      await flushing?.catch(() => {});
    },
  };
}
