import type { Readable } from 'node:stream';

export interface PutOptions {
  signal?: AbortSignal;
  contentType?: string;
}

export interface BlobInfo {
  key: string;
  size: number;
}

/**
 * The object-store port. Keys are relative, '/'-separated, and never contain '..'.
 * put() streams with bounded memory: if the body errors or the signal aborts, nothing is left
 * under the key (the partial upload is aborted) and put() rejects.
 */
export interface BlobStore {
  readonly kind: 's3' | 'fs';
  put(key: string, body: Readable, opts?: PutOptions): Promise<{ size: number }>;
  /** Rejects with CagedError('not_found') when the key does not exist. */
  get(key: string, opts?: { signal?: AbortSignal }): Promise<Readable>;
  head(key: string): Promise<BlobInfo | null>;
  /** Idempotent: deleting a missing key succeeds. */
  delete(key: string): Promise<void>;
  list(prefix: string): AsyncIterable<BlobInfo>;
  /** Removes what an interrupted put() of this key left behind (multipart uploads, temp files); returns how many. */
  abortIncomplete(key: string): Promise<number>;
  /** A URL anyone can GET until it expires, when the store can sign one itself (S3); undefined otherwise. */
  presignGet?(key: string, expiresInSeconds: number, downloadName: string): Promise<string>;
  close?(): Promise<void>;
}

export function assertValidKey(key: string): void {
  if (!key || key.startsWith('/') || key.split('/').some((p) => p === '' || p === '.' || p === '..') || key.includes('\\')) {
    throw new Error(`invalid blob key: ${JSON.stringify(key)}`);
  }
}
