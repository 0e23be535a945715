import { randomBytes } from 'node:crypto';
import fs, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { addAbortSignal, type Readable } from 'node:stream';
import { CagedError } from '../shared/errors.js';
import { backgroundWriteback } from './writeback.js';
import { assertValidKey, type BlobInfo, type BlobStore, type CallOptions, type IncompleteUpload, type LocalObjects, type PutOptions, type StagedObject } from './blob-store.js';

interface Staged extends StagedObject {
  handle: FileHandle;
}

const PARTIAL_MARK = '.partial-';

/**
 * Objects are plain files under rootDir/<key>. A put writes a sibling temp file and renames it
 * into place, so readers only ever see whole objects and a crash leaves only `<key>.partial-*`.
 */
export class FsBlobStore implements BlobStore {
  readonly kind = 'fs' as const;

  constructor(private readonly rootDir: string) {}

  readonly local: LocalObjects = {
    objectFile: async (key) => {
      const file = this.pathOf(key);
      const st = await fs.stat(file).catch((err: unknown) => {
        if (isMissing(err)) return undefined;
        throw err;
      });
      if (!st?.isFile()) throw notFound(key);
      return file;
    },
    stage: (key) => this.stage(key),
  };

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<{ size: number }> {
    const { signal } = opts;
    // Destroying the body is what unblocks the read loop when the producer has stalled.
    const onAbort = () => body.destroy(signal?.reason ?? new DOMException('put aborted', 'AbortError'));
    let staged: Staged | undefined;
    try {
      signal?.throwIfAborted();
      signal?.addEventListener('abort', onAbort, { once: true });
      staged = await this.stage(key);
      await writeAll(staged.handle, body);
      signal?.throwIfAborted();
      return await staged.publish();
    } catch (err) {
      body.destroy();
      await staged?.discard();
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** A temp file beside the object's path; published by fsync + rename + fsync of the directory. */
  private async stage(key: string): Promise<Staged> {
    const file = this.pathOf(key);
    if (path.basename(file).includes(PARTIAL_MARK)) throw new Error(`invalid blob key: ${JSON.stringify(key)}`);
    await fs.mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}${PARTIAL_MARK}${randomBytes(6).toString('hex')}`;
    const handle = await fs.open(tmp, 'wx');
    let state: 'open' | 'published' | 'discarded' = 'open';
    return {
      path: tmp,
      handle,
      fd: handle.fd,
      publish: async () => {
        if (state !== 'open') throw new Error(`staged object ${key} was already ${state}`);
        await handle.sync();
        const { size } = await handle.stat();
        await handle.close();
        await fs.rename(tmp, file);
        state = 'published';
        await fsyncDir(path.dirname(file));
        return { size };
      },
      discard: async () => {
        if (state !== 'open') return;
        state = 'discarded';
        await handle.close().catch(() => {});
        await fs.rm(tmp, { force: true });
      },
    };
  }

  async get(key: string, opts: CallOptions = {}): Promise<Readable> {
    const file = this.pathOf(key);
    let handle: FileHandle | undefined;
    try {
      handle = await fs.open(file, 'r');
      if ((await handle.stat()).isFile()) {
        const stream = handle.createReadStream(opts.offset ? { start: opts.offset } : {});
        return opts.signal ? addAbortSignal(opts.signal, stream) : stream;
      }
    } catch (err) {
      await handle?.close();
      if (isMissing(err)) throw notFound(key);
      throw err;
    }
    await handle.close();
    throw notFound(key);
  }

  async head(key: string): Promise<BlobInfo | null> {
    try {
      const st = await fs.stat(this.pathOf(key));
      return st.isFile() ? { key, size: st.size } : null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await fs.unlink(this.pathOf(key));
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    assertValidPrefix(prefix);
    for await (const { key } of this.walk(startDirOf(prefix), 'objects')) {
      if (!key.startsWith(prefix)) continue;
      // A concurrent delete between readdir and head is not an error: the key is just gone.
      const info = await this.head(key);
      if (info) yield info;
    }
  }

  /** The temp files of puts that never published (a crash), as uploads: the key they were for, the temp file's suffix as id. */
  async *listIncomplete(prefix: string): AsyncIterable<IncompleteUpload> {
    assertValidPrefix(prefix);
    for await (const { key: name, file } of this.walk(startDirOf(prefix), 'partials')) {
      const at = name.lastIndexOf(PARTIAL_MARK);
      const key = name.slice(0, at);
      if (!key.startsWith(prefix)) continue;
      const st = await fs.stat(file).catch(() => undefined);
      if (st) yield { key, uploadId: name.slice(at + PARTIAL_MARK.length), initiated: st.mtime };
    }
  }

  async abortIncomplete(key: string, _uploadIds?: readonly string[]): Promise<number> {
    const file = this.pathOf(key);
    const dir = path.dirname(file);
    const stem = `${path.basename(file)}${PARTIAL_MARK}`;
    let names: string[];
    try {
      names = await fs.readdir(dir);
    } catch (err) {
      if (isMissing(err)) return 0;
      throw err;
    }
    let removed = 0;
    for (const name of names) {
      if (!name.startsWith(stem)) continue;
      await fs.rm(path.join(dir, name), { force: true });
      removed++;
    }
    return removed;
  }

  private pathOf(key: string): string {
    assertValidKey(key);
    return path.join(this.rootDir, ...key.split('/'));
  }

  /** Files under relDir in key order: published objects, or the temp files of unfinished puts. */
  private async *walk(relDir: string, what: 'objects' | 'partials'): AsyncGenerator<{ key: string; file: string }> {
    let entries;
    try {
      entries = await fs.readdir(path.join(this.rootDir, ...relDir.split('/')), { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) return;
      throw err;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const key = relDir ? `${relDir}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        yield* this.walk(key, what);
      } else if (entry.isFile() && entry.name.includes(PARTIAL_MARK) === (what === 'partials')) {
        yield { key, file: path.join(this.rootDir, ...key.split('/')) };
      }
    }
  }
}

async function writeAll(handle: FileHandle, body: Readable): Promise<void> {
  const writeback = backgroundWriteback(handle);
  try {
    for await (const chunk of body) {
      const buf: Buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      await handle.write(buf);
      writeback.wrote(buf.byteLength);
    }
    await writeback.settle();
  } finally {
    await writeback.quiesce();
  }
}

// Without this the rename itself may not survive a power loss.
async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function notFound(key: string): CagedError {
  return new CagedError('not_found', `blob ${key} not found`);
}

/** Only the part of a prefix up to its last '/' names a directory; the rest filters entries. */
function startDirOf(prefix: string): string {
  const slash = prefix.lastIndexOf('/');
  return slash < 0 ? '' : prefix.slice(0, slash);
}

// A prefix is acceptable when some valid key could start with it; this keeps list() inside rootDir.
function assertValidPrefix(prefix: string): void {
  if (prefix !== '') assertValidKey(`${prefix}x`);
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}
