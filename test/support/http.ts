import http from 'node:http';

export interface HttpResult<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

/** A tiny JSON client for the API under test. */
export function apiClient(baseUrl: string, key?: string) {
  async function call<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<HttpResult<T>> {
    const h: Record<string, string> = { ...headers };
    if (key) h.authorization = `Bearer ${key}`;
    let payload: BodyInit | undefined;
    if (body instanceof Uint8Array || typeof body === 'string') payload = body as BodyInit;
    else if (body !== undefined) {
      h['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const res = await fetch(`${baseUrl}${path}`, { method, headers: h, body: payload });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      /* raw body */
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  }

  /** Polls an operation until it is no longer running. */
  async function waitOp(id: string, timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await call('GET', `/v1/operations/${id}`);
      if (r.status !== 200) throw new Error(`GET operation ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      if (r.body.status !== 'running') return r.body;
      if (Date.now() > deadline) throw new Error(`operation ${id} still running: ${JSON.stringify(r.body)}`);
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  async function createSandbox(extra: Record<string, unknown> = {}): Promise<string> {
    const r = await call('POST', '/v1/sandboxes', extra);
    if (r.status !== 201) throw new Error(`create sandbox: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.id;
  }

  async function exec(id: string, command: string[], background = false) {
    const r = await call('POST', `/v1/sandboxes/${id}/exec`, { command, background });
    if (r.status !== 200) throw new Error(`exec: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async function snapshot(id: string, name: string) {
    const r = await call('POST', `/v1/sandboxes/${id}/snapshots`, { name });
    if (r.status !== 202) throw new Error(`snapshot: ${r.status} ${JSON.stringify(r.body)}`);
    const op = await waitOp(r.body.operation.id);
    return { op, snapshotId: r.body.snapshot.id as string };
  }

  return { call, waitOp, createSandbox, exec, snapshot };
}

/**
 * Sends exactly this request line and these headers (fetch would normalise `%2e%2e` segments, or
 * refuse some headers). body may be a list of pieces, written one by one (chunked unless a length
 * is given). The server may answer and close before the whole body is sent: a write error then is
 * expected; a connection that closes with no answer is not.
 */
export function rawRequest(
  baseUrl: string,
  method: string,
  rawPath: string,
  opts: { key?: string; headers?: Record<string, string | number>; body?: Buffer | Buffer[] } = {},
): Promise<{ status: number; body: any; headers: http.IncomingHttpHeaders }> {
  const u = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, method, path: rawPath, headers: { ...(opts.key ? { authorization: `Bearer ${opts.key}` } : {}), ...opts.headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            /* raw body */
          }
          resolve({ status: res.statusCode!, body: parsed, headers: res.headers });
        });
      },
    );
    let answered = false;
    req.on('response', () => (answered = true));
    req.on('error', (err) => {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EPIPE' && code !== 'ECONNRESET') reject(err);
    });
    req.on('close', () => {
      if (!answered) reject(new Error(`${method} ${rawPath.slice(0, 80)}: the connection closed without a response`));
    });
    if (Array.isArray(opts.body)) {
      (async () => {
        for (const piece of opts.body as Buffer[]) {
          if (req.destroyed) return;
          if (!req.write(piece)) await new Promise((r) => req.once('drain', r));
        }
        req.end();
      })().catch(() => {});
    } else req.end(opts.body);
  });
}
