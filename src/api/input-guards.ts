import http from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import pino from 'pino';
import { CagedError } from '../shared/errors.js';

/** Deeper JSON than any request of the API needs; deeper still would overflow JSON.stringify. */
export const MAX_JSON_DEPTH = 32;

/**
 * How deep arrays and objects nest in a JSON text, found without parsing it (a parser, or a later
 * JSON.stringify of what it built, is what a hostile depth would overflow). Brackets inside
 * strings do not count.
 */
export function jsonDepth(text: string, stopAt = Infinity): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) {
        max = depth;
        if (max > stopAt) return max;
      }
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * PostgreSQL text cannot hold U+0000, nor jsonb an unpaired surrogate (\ud800), and no name, id
 * or argument of the API needs either.
 */
function hasNul(value: unknown, depth = 0): boolean {
  if (typeof value === 'string') return value.includes('\0') || LONE_SURROGATE.test(value);
  if (depth > MAX_JSON_DEPTH + 1 || value === null || typeof value !== 'object') return false;
  if (Array.isArray(value)) return value.some((v) => hasNul(v, depth + 1));
  return Object.entries(value).some(([k, v]) => k.includes('\0') || hasNul(v, depth + 1));
}

/** The JSON body parser of the API: too deep, or holding a NUL character, is 400 invalid_input; empty is no body. */
export function installJsonParser(app: FastifyInstance): void {
  // fastify's own parser, with its refusal of __proto__ and constructor.prototype keys.
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = body as string;
    // Clients (curl -H 'content-type: application/json' -X DELETE, generated SDKs) send the header
    // with no body; that means "no body", as it does on routes whose body is optional anyway.
    if (text.trim() === '') return done(null, undefined);
    if (jsonDepth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) {
      return done(new CagedError('invalid_input', `the JSON body nests deeper than ${MAX_JSON_DEPTH} levels`), undefined);
    }
    parse(req, text, (err, parsed) => {
      if (err) return done(err, undefined);
      if (hasNul(parsed)) return done(new CagedError('invalid_input', 'the JSON body holds a NUL character (\\u0000) or an unpaired surrogate'), undefined);
      done(null, parsed);
    });
  });
}

/** Path parameters and query values with a NUL character are refused before any handler sees them. */
export async function refuseNulInUrl(req: FastifyRequest): Promise<void> {
  if (hasNul(req.params) || hasNul(req.query)) throw new CagedError('invalid_input', 'the URL holds a NUL character (%00)');
}

/** The documented error body, written whatever the status (framework errors have their own). */
function errorBody(code: string, message: string): string {
  return JSON.stringify({ error: { code, message } });
}

/**
 * Errors the router raises before any route runs: a bad %-escape (400), a path parameter longer
 * than the router takes (414). Both leave in the documented shape.
 */
export function frameworkErrors(err: FastifyError, _req: FastifyRequest, reply: FastifyReply) {
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    return reply.status(414).type('application/json').send(errorBody('too_large', 'a path component of the URL is too long'));
  }
  if (err.code === 'FST_ERR_BAD_URL') {
    return reply.status(400).type('application/json').send(errorBody('invalid_input', 'the URL holds an invalid %-escape'));
  }
  return reply.status(400).type('application/json').send(errorBody('invalid_input', 'the request could not be routed'));
}

/**
 * Requests Node's HTTP parser refuses (headers or request line too large: 431; malformed: 400;
 * too slow: 408) never reach fastify; they are answered on the socket, in the documented shape.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  let status = 400;
  let code = 'invalid_input';
  let message = 'malformed HTTP request';
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    code = 'too_large';
    message = 'the request line or headers are too large';
  } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    message = 'the request was not received in time';
  }
  const body = errorBody(code, message);
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}

const SECRET_PARAMS = /([?&](?:sig|signature|expires|X-Amz-[A-Za-z-]+|X-Goog-[A-Za-z-]+|token)=)[^&#\s"']*/gi;

/** A URL or message with the credentials of signed links taken out (query values of sig, X-Amz-*, ...). */
export function scrubSignedUrls(text: string): string {
  return text.replace(SECRET_PARAMS, '$1[redacted]');
}

/** The request as logged: the path, and no query string at all for signed downloads. */
export function logUrl(url: string): string {
  const q = url.indexOf('?');
  if (q === -1) return url;
  const pathPart = url.slice(0, q);
  let decoded = pathPart;
  try {
    decoded = decodeURIComponent(pathPart);
  } catch {
    // An invalid escape: judged as written.
  }
  // The router decodes %-escapes, so /%761/downloads/... is a download too.
  if (/\/downloads\//i.test(decoded)) return `${pathPart}?[redacted]`;
  return scrubSignedUrls(url);
}

interface LoggedRequest {
  method?: string;
  url?: string;
  ip?: string;
  host?: string;
  socket?: { remotePort?: number };
}

/** pino serializers for the API's logger: signed URLs never reach the request log. */
export const apiLogSerializers = {
  req(req: LoggedRequest) {
    return {
      method: req.method,
      url: typeof req.url === 'string' ? logUrl(req.url) : req.url,
      host: req.host,
      remoteAddress: req.ip,
      remotePort: req.socket?.remotePort,
    };
  },
  err(err: Error) {
    // pino's own serializer (type, message, stack, cause, own fields), then signed URLs scrubbed.
    const out = pino.stdSerializers.err(err) as unknown as Record<string, unknown>;
    if (!out || typeof out !== 'object') return out;
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, typeof v === 'string' ? scrubSignedUrls(v) : v]));
  },
};
