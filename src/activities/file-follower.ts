import fs from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { backgroundWriteback } from '../storage/writeback.js';

const READ_BYTES = 1024 * 1024;
/** How long to wait at the end of a file that is still being written. */
const POLL_MS = 5;

export interface FollowOptions {
  /** Settles when the file's writer (a child process) has exited; until then EOF only means "not yet". */
  writerDone: Promise<unknown>;
  /** Gets each piece in turn; the buffer is reused once the returned promise settles. */
  onChunk(chunk: Buffer): void | Promise<void>;
  signal?: AbortSignal;
  /** Start writeback of what has been read so far, in the background (the file is being written to be kept). */
  writeback?: boolean;
}

/**
 * Reads a file from its start while another process may still be appending to it, through one
 * reused buffer. This is how the worker hashes and meters an archive that tar and zstd write (or
 * read) themselves: no byte is copied into a fresh Buffer, so a multi-gigabyte snapshot creates no
 * garbage for V8 to collect. Returns the number of bytes read.
 */
export async function followFile(file: string, o: FollowOptions): Promise<number> {
  let writerFinished = false;
  o.writerDone.then(
    () => (writerFinished = true),
    () => (writerFinished = true),
  );
  const handle = await fs.open(file, 'r');
  const buf = Buffer.allocUnsafeSlow(READ_BYTES);
  let position = 0;
  const writeback = o.writeback ? backgroundWriteback(handle) : undefined;
  try {
    for (;;) {
      o.signal?.throwIfAborted();
      // Noted before the read: a writer that had exited before it cannot add anything after it.
      const finalRead = writerFinished;
      const { bytesRead } = await handle.read(buf, 0, buf.length, position);
      if (bytesRead === 0) {
        if (finalRead) break;
        // An abort ends the wait early; the loop then throws the signal's own reason (a cancellation).
        await sleep(POLL_MS, undefined, { signal: o.signal }).catch(() => {});
        continue;
      }
      position += bytesRead;
      await o.onChunk(buf.subarray(0, bytesRead));
      writeback?.wrote(bytesRead);
    }
    await writeback?.settle();
    return position;
  } finally {
    await writeback?.quiesce();
    await handle.close();
  }
}
