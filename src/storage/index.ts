import path from 'node:path';
import type { S3Config } from '../config.js';
import type { BlobStore, RetryInfo } from './blob-store.js';
import { FsBlobStore } from './fs-blob-store.js';
import { RetryingBlobStore } from './retrying-blob-store.js';
import { S3BlobStore } from './s3-blob-store.js';

export type { BlobStore, BlobInfo, PutOptions, RetryInfo } from './blob-store.js';
export { RetryingBlobStore, withRetry, type RetryPolicy } from './retrying-blob-store.js';
export { assertValidKey } from './blob-store.js';
export { FsBlobStore } from './fs-blob-store.js';
export { S3BlobStore } from './s3-blob-store.js';

/**
 * S3 when configured, else files under the data dir, behind RetryingBlobStore: failures are
 * classified (storage_error, storage_unavailable) and transient ones retried for storageRetryMs.
 * S3 credentials come from the default AWS chain.
 */
export function createBlobStore(cfg: { dataDir: string; s3?: S3Config; storageRetryMs: number; onRetry?: (info: RetryInfo) => void }): BlobStore {
  const inner = cfg.s3 ? new S3BlobStore(cfg.s3) : new FsBlobStore(path.join(cfg.dataDir, 'blobs'));
  return new RetryingBlobStore(inner, { totalMs: cfg.storageRetryMs, onRetry: cfg.onRetry });
}
