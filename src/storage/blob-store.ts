import type { Readable } from 'node:stream';

export interface PutOptions {
  signal?: AbortSignal;
  contentType?: string;
  /**
   * Runs each request of the put (a part, the completion) under a retry policy; the store calls it
   * around every request it can repeat from what it holds (a part buffer). Set by RetryingBlobStore.
   */
  retry?: RetryRunner;
  /** Told of each retry of a request of this call (RetryingBlobStore). */
  onRetry?: (info: RetryInfo) => void;
  /** Told when a request succeeded after retries: the transfer proceeds again. */
  onRecovered?: () => void;
  /** Told the id of a multipart upload as soon as the store has started it, so a later attempt can abort it by id. */
  onUploadStarted?: (uploadId: string) => void;
}

/** Options of a call that reads. */
export interface CallOptions {
  signal?: AbortSignal;
  /** get(): start at this byte (RetryingBlobStore resumes a body that broke off here). */
  offset?: number;
  onRetry?: (info: RetryInfo) => void;
  onRecovered?: () => void;
}

export interface RetryInfo {
  /** The attempt that failed (1 = the first). */
  attempt: number;
  /** The store's code and message. */
  error: string;
  /** When the next attempt starts. */
  nextAt: Date;
  /** The request that failed ("UploadPart 3 of snapshots/…"). */
  what: string;
}

export type RetryRunner = <T>(what: string, fn: () => Promise<T>) => Promise<T>;

export interface BlobInfo {
  key: string;
  size: number;
  /** When the object was last written, where the store reports it (the consistency checker's grace period). */
  modifiedAt?: Date;
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
  get(key: string, opts?: CallOptions): Promise<Readable>;
  head(key: string): Promise<BlobInfo | null>;
  /** Idempotent: deleting a missing key succeeds. */
  delete(key: string): Promise<void>;
  list(prefix: string): AsyncIterable<BlobInfo>;
  /**
   * Removes what an interrupted put() of this key left behind (multipart uploads, temp files); returns how many.
   * `uploadIds` are uploads recorded when they started (PutOptions.onUploadStarted): they are aborted by id
   * even where the store cannot list multipart uploads. Listing is best-effort: a store that lacks the call
   * (501 NotImplemented) or answers 404 NoSuchUpload when nothing is listed counts as having nothing.
   */
  abortIncomplete(key: string, uploadIds?: readonly string[]): Promise<number>;
  /**
   * Multipart uploads (or temp files) not yet completed under `prefix`, for the consistency checker.
   * Best-effort: undefined when the store cannot list them (some S3-compatible servers lack the call).
   */
  listIncomplete?(prefix: string): AsyncIterable<IncompleteUpload>;
  /** Present when objects are files on this machine (fs): data movers then let their tools read and write them directly. */
  readonly local?: LocalObjects;
  /** A URL anyone can GET until it expires, when the store can sign one itself (S3); undefined otherwise. */
  presignGet?(key: string, expiresInSeconds: number, downloadName: string): Promise<string>;
  close?(): Promise<void>;
}

export interface IncompleteUpload {
  key: string;
  uploadId: string;
  initiated?: Date;
}

export interface LocalObjects {
  /** The file that holds the object under `key`; rejects with CagedError('not_found') like get(). */
  objectFile(key: string): Promise<string>;
  /**
   * A new, empty temp file for `key`, open for writing. publish() makes it the object durably
   * (fsync, rename, fsync of the directory); discard() removes it. Until publish() nothing is
   * visible under the key, and abortIncomplete(key) removes what a crash left.
   */
  stage(key: string): Promise<StagedObject>;
}

export interface StagedObject {
  path: string;
  /** The open descriptor, for a child process to write to. */
  fd: number;
  publish(): Promise<{ size: number }>;
  /** Idempotent; a no-op after publish(). */
  discard(): Promise<void>;
}

export function assertValidKey(key: string): void {
  if (!key || key.startsWith('/') || key.split('/').some((p) => p === '' || p === '.' || p === '..') || key.includes('\\')) {
    throw new Error(`invalid blob key: ${JSON.stringify(key)}`);
  }
}
