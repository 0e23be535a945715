import { get as httpGet, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import { Readable } from 'node:stream';

export const DEFAULT_API_URL = 'http://127.0.0.1:8080';

/** A non-2xx answer from the API, carrying its snake_case error code. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface RequestOptions {
  json?: unknown;
  body?: Readable | ReadableStream<Uint8Array>;
  headers?: Record<string, string>;
  /** Send the admin token instead of the account's API key. */
  admin?: boolean;
}

/** Builds an ApiError from a failed response, whatever its body turns out to be. */
export async function apiErrorFrom(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  try {
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const { code, message } = parsed.error ?? {};
    if (typeof code === 'string' && typeof message === 'string') return new ApiError(res.status, code, message);
  } catch {
    // Not JSON: a proxy or a crashed server answered; the status line is all we have.
  }
  return new ApiError(res.status, `http_${res.status}`, res.statusText || `HTTP ${res.status}`);
}

export class ApiClient {
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly apiKey?: string,
    private readonly adminToken?: string,
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  /** Resolves server-relative URLs (as local download links are) against the API base. */
  resolve(pathOrUrl: string): string {
    return pathOrUrl.startsWith('/') ? `${this.baseUrl}${pathOrUrl}` : pathOrUrl;
  }

  /**
   * GETs a (possibly large) body as a Node stream through node:http(s), not fetch: the undici in
   * Node 24 throws an uncatchable assertion when a server closes the connection while the body waits
   * on backpressure (nodejs/undici#5360), which a download to a slow disk does. Non-2xx rejects.
   */
  async download(pathOrUrl: string): Promise<IncomingMessage> {
    const url = new URL(this.resolve(pathOrUrl));
    const headers: Record<string, string> = {};
    // Absolute URLs are presigned object-store links: an Authorization header there would be rejected.
    if (pathOrUrl.startsWith('/') && this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      (url.protocol === 'https:' ? httpsGet : httpGet)(url, { headers }, resolve).on('error', (err) =>
        reject(new Error(`cannot reach ${url.origin}: ${(err as NodeJS.ErrnoException).code ?? err.message}`)),
      );
    });
    if (!res.statusCode || res.statusCode >= 300) {
      let text = '';
      for await (const chunk of res) if (text.length < 4096) text += String(chunk);
      throw new Error(`download failed: HTTP ${res.statusCode ?? '?'} ${text.slice(0, 500)}`);
    }
    return res;
  }

  /** Sends a request and returns the response as is, for callers that stream the body. */
  async raw(method: string, pathOrUrl: string, opts: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { ...opts.headers };
    // Absolute URLs are presigned object-store links: an Authorization header there would be rejected.
    const token = pathOrUrl.startsWith('/') ? (opts.admin ? this.adminToken : this.apiKey) : undefined;
    if (token) headers.authorization = `Bearer ${token}`;
    const init: RequestInit & { duplex?: 'half' } = { method, headers };
    if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(opts.json);
    } else if (opts.body) {
      init.body = opts.body instanceof Readable ? (Readable.toWeb(opts.body) as ReadableStream<Uint8Array>) : opts.body;
      // Node's fetch refuses a streamed body unless told it may send before the response starts.
      init.duplex = 'half';
    }
    const url = this.resolve(pathOrUrl);
    let res: Response;
    try {
      res = await fetch(url, init);
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(`cannot reach ${new URL(url).origin}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
    if (!res.ok) {
      const error = await apiErrorFrom(res);
      if (error.status === 401 && !token) {
        error.message += opts.admin ? ' (set CAGED_ADMIN_TOKEN or pass --admin-token)' : ' (set CAGED_API_KEY or pass --api-key)';
      }
      throw error;
    }
    return res;
  }

  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.raw(method, path, opts);
    const text = await res.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }
}
