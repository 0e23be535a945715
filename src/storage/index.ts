import path from 'node:path';
import type { S3Config } from '../config.js';
import type { BlobStore } from './blob-store.js';
import { FsBlobStore } from './fs-blob-store.js';
import { S3BlobStore } from './s3-blob-store.js';

export type { BlobStore, BlobInfo, PutOptions } from './blob-store.js';
export { assertValidKey } from './blob-store.js';
export { FsBlobStore } from './fs-blob-store.js';
export { S3BlobStore } from './s3-blob-store.js';

/** S3 when configured, else files under the data dir. S3 credentials come from the default AWS chain. */
export function createBlobStore(cfg: { dataDir: string; s3?: S3Config }): BlobStore {
  return cfg.s3 ? new S3BlobStore(cfg.s3) : new FsBlobStore(path.join(cfg.dataDir, 'blobs'));
}
