import { CagedError } from '../shared/errors.js';

/**
 * How an object store's failure behaves under retry:
 * - transient: 5xx (but 501/505), throttling (429, SlowDown, Throttling*), request timeouts, resets,
 *   refused or dropped connections, SDK timeouts: a later attempt may succeed.
 * - permanent: access denied, no such bucket, bad credentials, NotImplemented, every other 4xx:
 *   retrying only hides the cause for as long as the retries last.
 * - other: not the store's answer at all (a CagedError such as not_found, a cancellation, an error
 *   of the body being uploaded, a bug): passed on as it is.
 */
export type StorageErrorKind = 'transient' | 'permanent' | 'other';

const TRANSIENT_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'TooManyRequests',
  'TooManyRequestsException',
  'RequestThrottled',
  'RequestThrottledException',
  'RequestLimitExceeded',
  'ProvisionedThroughputExceededException',
  'BandwidthLimitExceeded',
  'RequestTimeout',
  'RequestTimeoutException',
  'RequestTimeTooSkewed',
  'InternalError',
  'ServiceUnavailable',
  'TimeoutError',
]);

const TRANSIENT_ERRNO = new Set([
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTCONN',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
]);

/** Local-disk errno codes (fs store, spool files) that no retry heals. */
const PERMANENT_ERRNO = new Set(['EACCES', 'EPERM', 'EROFS', 'ENOSPC', 'EDQUOT', 'EIO', 'ENAMETOOLONG']);

interface SdkLike {
  name?: string;
  code?: string;
  message?: string;
  $fault?: 'client' | 'server';
  $retryable?: { throttling?: boolean };
  $metadata?: { httpStatusCode?: number };
  Code?: string;
}

export function storageErrorCode(err: unknown): string | undefined {
  const e = err as SdkLike | undefined;
  if (!e || typeof e !== 'object') return undefined;
  if (e.Code) return e.Code;
  if (e.name && e.name !== 'Error' && e.name !== 'UnknownError' && e.name !== 'Unknown') return e.name;
  return e.code;
}

export function httpStatus(err: unknown): number | undefined {
  return (err as SdkLike | undefined)?.$metadata?.httpStatusCode;
}

export function classifyStorageError(err: unknown): StorageErrorKind {
  if (err instanceof CagedError) return 'other';
  const e = err as SdkLike | undefined;
  if (!e || typeof e !== 'object') return 'other';
  if (e.name === 'AbortError') return 'other';
  const name = e.name ?? '';
  const status = httpStatus(err);
  // A socket reset or timeout, whoever threw it (node, the SDK's http handler, undici).
  if (e.code && TRANSIENT_ERRNO.has(e.code)) return 'transient';
  if (/socket hang up|ECONNRESET|EPIPE|ETIMEDOUT|premature close|other side closed/i.test(e.message ?? '') && status === undefined) return 'transient';
  if (TRANSIENT_NAMES.has(name) || TRANSIENT_NAMES.has(e.Code ?? '')) return 'transient';
  if (e.$retryable) return 'transient';
  if (status !== undefined) {
    if (status === 501 || status === 505) return 'permanent';
    if (status >= 500 || status === 429 || status === 408) return 'transient';
    if (status >= 400) return 'permanent';
  }
  if (e.code && PERMANENT_ERRNO.has(e.code)) return 'permanent';
  if (e.$fault === 'server') return 'transient';
  if (e.$fault === 'client' && status !== undefined) return 'permanent';
  return 'other';
}

/** What the user is told: the store's own code, its HTTP status and message. */
export function describeStorageError(err: unknown): string {
  const code = storageErrorCode(err);
  const status = httpStatus(err);
  const msg = (err as SdkLike | undefined)?.message;
  // A HEAD's error has no body, so no code: the status is all there is.
  const head = code ? `${code}${status ? ` (HTTP ${status})` : ''}` : status ? `HTTP ${status}` : 'error';
  return `${head}${msg && msg !== code && msg !== 'UnknownError' ? `: ${msg}` : ''}`;
}

function details(err: unknown, what: string): Record<string, unknown> {
  const status = httpStatus(err);
  return { operation: what, store_code: storageErrorCode(err) ?? null, ...(status ? { http_status: status } : {}) };
}

/** A permanent refusal of the store, as the API reports it. */
export function permanentStorageError(err: unknown, what: string): CagedError {
  return new CagedError('storage_error', `object store refused ${what}: ${describeStorageError(err)}`, details(err, what));
}

/** Transient failures that outlasted the retry bound. */
export function unavailableStorageError(err: unknown, what: string, attempts: number, seconds: number): CagedError {
  return new CagedError(
    'storage_unavailable',
    `object store kept failing ${what} for ${Math.round(seconds)} s (${attempts} attempts): ${describeStorageError(err)}`,
    { ...details(err, what), attempts },
  );
}

/** The store's answer to a call it does not offer or has nothing for: 404 NoSuchUpload, 501 NotImplemented, 405. */
export function isMissingCall(err: unknown): boolean {
  const code = storageErrorCode(err);
  const status = httpStatus(err);
  return code === 'NoSuchUpload' || code === 'NotImplemented' || code === 'MethodNotAllowed' || status === 501 || status === 405 || (status === 404 && code !== 'NoSuchBucket');
}
