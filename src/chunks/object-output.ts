import fs from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { pipeline, Transform } from 'node:stream';
import path from 'node:path';
import type { BlobStore, PutOptions } from '../storage/blob-store.js';

/**
 * A new object written through a file descriptor, by this thread or a chunk worker: with a local
 * store the store's own staged file (published by fsync and rename), with a remote one a spool
 * file beside the sandbox that is uploaded on publish. Nothing is visible under the key before
 * publish(); discard() leaves nothing behind.
 */
export interface PublishOptions {
  putOptions?: PutOptions;
  keep?: (file: string) => Promise<boolean>;
  /** Told the bytes as they go to the store (all at once for a local store); the upload waits for it. */
  onUpload?: (n: number) => void | Promise<void>;
}

export interface ObjectOutput {
  readonly key: string;
  readonly fd: number;
  readonly path: string;
  /**
   * Makes the bytes written the object. For a remote store, `keep` may take the spool file (the
   * host cache adopts packs); otherwise it is removed.
   */
  publish(o?: PublishOptions): Promise<{ size: number }>;
  discard(): Promise<void>;
}

export async function openOutput(store: BlobStore, key: string, spoolDir: string | undefined): Promise<ObjectOutput> {
  if (store.local) {
    const staged = await store.local.stage(key);
    return {
      key,
      fd: staged.fd,
      path: staged.path,
      async publish(o = {}) {
        if (o.onUpload) await o.onUpload((await fs.stat(staged.path)).size);
        return staged.publish();
      },
      discard: () => staged.discard(),
    };
  }
  if (!spoolDir) throw new Error(`a spool directory is needed to write ${key} to a remote store`);
  const file = path.join(spoolDir, key.replace(/\//g, '_'));
  const handle = await fs.open(file, 'w+');
  let state: 'open' | 'published' | 'discarded' = 'open';
  return {
    key,
    fd: handle.fd,
    path: file,
    async publish(o = {}) {
      if (state !== 'open') throw new Error(`output ${key} was already ${state}`);
      const { size } = await handle.stat();
      await handle.close();
      try {
        const source = createReadStream(file, { highWaterMark: 1024 * 1024 });
        const onUpload = o.onUpload;
        const body = onUpload
          ? pipeline(source, new Transform({ transform: (c: Buffer, _e, cb) => void Promise.resolve(onUpload(c.length)).then(() => cb(null, c), cb) }), () => {})
          : source;
        await store.put(key, body, o.putOptions);
        state = 'published';
      } finally {
        if (state !== 'published' || !(await o.keep?.(file).catch(() => false))) await fs.rm(file, { force: true });
      }
      return { size };
    },
    async discard() {
      if (state !== 'open') return;
      state = 'discarded';
      await handle.close().catch(() => {});
      await fs.rm(file, { force: true });
    },
  };
}
