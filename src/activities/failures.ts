import { ApplicationFailure, Context } from '@temporalio/activity';
import { CagedError, type ErrorCode } from '../shared/errors.js';
import { isCatalogUnavailable } from '../catalog/unavailable.js';

/** Codes that a retry cannot fix: the workflow stops at once and reports them. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set(['internal', 'unavailable']);

/**
 * Business errors become non-retryable ApplicationFailures whose type is the API error code. A
 * catalog that cannot be reached becomes a retryable `unavailable`, so the step waits for
 * PostgreSQL and, if it never comes back, the operation reports why.
 */
export function toFailure(err: unknown): unknown {
  if (!(err instanceof CagedError) && isCatalogUnavailable(err)) {
    return ApplicationFailure.create({ type: 'unavailable', message: `unavailable: ${(err as Error)?.message ?? String(err)}`, nonRetryable: false, cause: err instanceof Error ? err : undefined });
  }
  if (err instanceof CagedError) {
    return ApplicationFailure.create({
      type: err.code,
      message: err.message,
      nonRetryable: !RETRYABLE.has(err.code),
      details: err.details ? [err.details] : undefined,
    });
  }
  return err;
}

/** Wraps every activity so thrown CagedErrors cross into Temporal with their code. */
export function withFailureMapping<T extends Record<string, (...args: any[]) => Promise<any>>>(activities: T): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(activities)) {
    out[name] = async (...args: unknown[]) => {
      try {
        return await fn(...args);
      } catch (err) {
        const signal = safeCancellationSignal();
        if (signal?.aborted) throw signal.reason;
        throw toFailure(err);
      }
    };
  }
  return out as T;
}

function safeCancellationSignal(): AbortSignal | undefined {
  try {
    return Context.current().cancellationSignal;
  } catch {
    return undefined;
  }
}

