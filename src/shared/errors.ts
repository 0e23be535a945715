/**
 * Error codes the API returns. Business failures raised in activities and workflows carry one of
 * these as the ApplicationFailure type, so the code survives the trip through Temporal.
 * This module is imported by workflow code: keep it free of Node built-ins.
 */
export const ERROR_STATUS = {
  invalid_input: 400,
  invalid_archive: 400,
  exec_disabled: 400,
  unauthorized: 401,
  forbidden: 403,
  url_expired: 403,
  not_found: 404,
  conflict: 409,
  name_taken: 409,
  invalid_state: 409,
  snapshot_in_use: 409,
  too_large: 413,
  limit_exceeded: 422,
  checksum_mismatch: 500,
  internal: 500,
  /** The object store refused a request for good (access denied, no such bucket, not implemented, other 4xx). */
  storage_error: 502,
  unavailable: 503,
  /** The object store kept failing transiently (5xx, throttling, resets) past the retry bound. */
  storage_unavailable: 503,
  /** The operation ran past its deadline and was rolled back. */
  deadline_exceeded: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && code in ERROR_STATUS;
}

/** A failure with a code the API can return as it is. */
export class CagedError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'CagedError';
  }
  get status(): number {
    return ERROR_STATUS[this.code];
  }
}
