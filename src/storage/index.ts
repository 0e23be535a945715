import path from 'node:path';
import type { S3Config } from '../config.js';
import type { BlobStore, RetryInfo } from './blob-store.js';
import { FsBlobStore } from './fs-blob-store.js';
import { RetryingBlobStore } from './retrying-blob-store.js';
import { S3BlobStore, type S3Credentials } from './s3-blob-store.js';

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
export function createBlobStore(cfg: {
  dataDir: string;
  s3?: S3Config;
  /** Instead of the default AWS chain (tests against local servers). */
  s3Credentials?: S3Credentials;
  storageRetryMs: number;
  onRetry?: (info: RetryInfo) => void;
}): BlobStore {
  const inner = cfg.s3
    ? new S3BlobStore({ ...cfg.s3, requestTimeoutMs: cfg.s3.requestTimeoutMs ?? s3RequestTimeoutMs(cfg.storageRetryMs) }, { credentials: cfg.s3Credentials })
    : new FsBlobStore(path.join(cfg.dataDir, 'blobs'));
  return new RetryingBlobStore(inner, { totalMs: cfg.storageRetryMs, onRetry: cfg.onRetry });
}

/**
 * How long one S3 request may sit with an idle socket. A server that stalls (accepts, then never
 * answers) is only noticed when this fires, so it must leave room in the retry budget for several
 * attempts: otherwise the first attempt uses the whole budget, no retry is ever shown, and the
 * failure comes a full timeout late. A quarter of the budget, within 5-30 s: idle means no byte
 * either way, so a slow but moving transfer never trips it.
 */
export function s3RequestTimeoutMs(storageRetryMs: number): number {
  return Math.min(30_000, Math.max(5_000, Math.floor(storageRetryMs / 4)));
}
