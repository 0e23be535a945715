/**
 * Whether an error means "the catalog database cannot be reached right now" (refused, reset or
 * timed-out connections, a server shutting down or starting up) rather than a query that is wrong.
 * Such errors heal by themselves once PostgreSQL is back: the API answers them 503 `unavailable`
 * and activities retry them. No imports, so every layer can use it.
 */
export function isCatalogUnavailable(err: unknown): boolean {
  for (let cur: unknown = err, depth = 0; cur && typeof cur === 'object' && depth < 5; depth++) {
    const e = cur as { code?: unknown; message?: unknown; errors?: unknown; cause?: unknown };
    if (typeof e.code === 'string' && (NETWORK_CODES.has(e.code) || SQLSTATES.has(e.code) || /^08/.test(e.code))) return true;
    const message = typeof e.message === 'string' ? e.message : '';
    if (MESSAGES.some((m) => m.test(message))) return true;
    // Node reports a refused connection to several addresses as an AggregateError.
    if (Array.isArray(e.errors) && e.errors.some((x) => isCatalogUnavailable(x))) return true;
    cur = e.cause;
  }
  return false;
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND', 'ECONNABORTED']);

/** SQLSTATEs of a server going away: admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections. (Class 08, connection exceptions, too.) */
const SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);

/** pg's own messages for a connection that died or never came (they carry no code). */
const MESSAGES = [
  /^Connection terminated/i,
  /timeout exceeded when trying to connect/i,
  /Client has encountered a connection error and is not queryable/i,
  /^Connection terminated due to connection timeout/i,
  /Query read timeout/i,
];
