import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** The S3 operation a path-style request is, as far as the proxy needs to know. */
export type S3Op =
  | 'UploadPart'
  | 'CreateMultipartUpload'
  | 'CompleteMultipartUpload'
  | 'AbortMultipartUpload'
  | 'ListMultipartUploads'
  | 'ListParts'
  | 'PutObject'
  | 'GetObject'
  | 'HeadObject'
  | 'DeleteObject'
  | 'ListObjects'
  | 'Other';

export type Fault =
  /** 503 SlowDown. */
  | 'slowdown'
  /** Forwards `afterBytes` bytes of the request body, then destroys both connections. */
  | 'reset'
  /** Forwards the request, then `afterBytes` bytes of the response body, then destroys both connections. */
  | 'reset-response'
  /** Waits `delayMs`, then forwards. */
  | 'slow'
  /** 403 AccessDenied. */
  | 'forbidden'
  /** 404 NoSuchUpload (what some servers answer to ListMultipartUploads with nothing to list). */
  | 'no-such-upload'
  /** 501 NotImplemented. */
  | 'not-implemented';

export interface FaultRule {
  fault: Fault;
  /** Which requests; all when unset. */
  ops?: S3Op[];
  /** Only requests whose key contains this. */
  keyIncludes?: string;
  /** Let this many matching requests through first. */
  skip?: number;
  /** Inject at most this many times. */
  count?: number;
  /** Inject only for this long, counted from the first injection (a burst of T ms). */
  forMs?: number;
  afterBytes?: number;
  delayMs?: number;
}

export interface Seen {
  op: S3Op;
  key: string;
  status: number;
  fault?: Fault;
}

export interface FaultProxy {
  /** The proxy's endpoint, to configure the S3 client with. */
  endpoint: string;
  /** Arms a rule; rules are checked in the order they were added. */
  add(rule: FaultRule): void;
  clear(): void;
  /** How many requests each fault was injected into. */
  injected: Record<Fault, number>;
  /** Every request that went through, with its status (0 for a reset). */
  seen: Seen[];
  close(): Promise<void>;
}

const ERRORS: Partial<Record<Fault, { status: number; code: string; message: string }>> = {
  slowdown: { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' },
  forbidden: { status: 403, code: 'AccessDenied', message: 'Access Denied' },
  'no-such-upload': { status: 404, code: 'NoSuchUpload', message: 'The specified upload does not exist.' },
  'not-implemented': { status: 501, code: 'NotImplemented', message: 'A header you provided implies functionality that is not implemented' },
};

export function opOf(method: string, url: URL): { op: S3Op; key: string } {
  const [, , ...rest] = url.pathname.split('/');
  const key = decodeURIComponent(rest.join('/'));
  const q = url.searchParams;
  if (!key) {
    if (method === 'GET' && q.has('uploads')) return { op: 'ListMultipartUploads', key };
    if (method === 'GET') return { op: 'ListObjects', key: q.get('prefix') ?? '' };
    return { op: 'Other', key };
  }
  if (method === 'PUT' && q.has('uploadId')) return { op: 'UploadPart', key };
  if (method === 'POST' && q.has('uploads')) return { op: 'CreateMultipartUpload', key };
  if (method === 'POST' && q.has('uploadId')) return { op: 'CompleteMultipartUpload', key };
  if (method === 'DELETE' && q.has('uploadId')) return { op: 'AbortMultipartUpload', key };
  if (method === 'GET' && q.has('uploadId')) return { op: 'ListParts', key };
  if (method === 'PUT') return { op: 'PutObject', key };
  if (method === 'GET') return { op: 'GetObject', key };
  if (method === 'HEAD') return { op: 'HeadObject', key };
  if (method === 'DELETE') return { op: 'DeleteObject', key };
  return { op: 'Other', key };
}

interface Armed extends FaultRule {
  matched: number;
  used: number;
  firstAt?: number;
}

/**
 * An HTTP proxy on loopback between an S3 client and an S3-protocol server (path-style requests,
 * headers forwarded untouched so signatures still verify), which injects faults by rule and
 * counts them, so a test can prove the fault it meant to survive really happened.
 */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const rules: Armed[] = [];
  const injected: Record<Fault, number> = { slowdown: 0, reset: 0, 'reset-response': 0, slow: 0, forbidden: 0, 'no-such-upload': 0, 'not-implemented': 0 };
  const seen: Seen[] = [];
  const sockets = new Set<import('node:net').Socket>();

  const pick = (op: S3Op, key: string): Armed | undefined => {
    for (const r of rules) {
      if (r.ops && !r.ops.includes(op)) continue;
      if (r.keyIncludes && !key.includes(r.keyIncludes)) continue;
      r.matched++;
      if (r.matched <= (r.skip ?? 0)) continue;
      if (r.count !== undefined && r.used >= r.count) continue;
      if (r.forMs !== undefined && r.firstAt !== undefined && Date.now() - r.firstAt > r.forMs) continue;
      r.firstAt ??= Date.now();
      r.used++;
      return r;
    }
    return undefined;
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const { op, key } = opOf(req.method ?? 'GET', url);
    const rule = pick(op, key);
    const record = (status: number) => seen.push({ op, key, status, ...(rule && { fault: rule.fault }) });
    if (rule) injected[rule.fault]++;
    const answer = rule && ERRORS[rule.fault];
    if (answer) {
      req.resume();
      req.once('end', () => {
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${answer.code}</Code><Message>${answer.message}</Message><RequestId>fault-proxy</RequestId></Error>`;
        res.writeHead(answer.status, { 'content-type': 'application/xml', 'content-length': req.method === 'HEAD' ? 0 : Buffer.byteLength(body) });
        res.end(req.method === 'HEAD' ? undefined : body);
        record(answer.status);
      });
      return;
    }
    const forward = () => {
      const up = http.request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (upRes) => {
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          if (rule?.fault === 'reset-response') {
            let sent = 0;
            const limit = rule.afterBytes ?? 64 * 1024;
            upRes.on('data', (chunk: Buffer) => {
              if (sent >= limit) return;
              const part = chunk.subarray(0, limit - sent);
              sent += part.byteLength;
              res.write(part);
              if (sent >= limit) {
                upRes.destroy();
                req.socket.destroy();
                record(0);
              }
            });
            upRes.once('end', () => {
              if (sent < limit) res.end();
            });
            return;
          }
          upRes.pipe(res);
          upRes.once('end', () => record(upRes.statusCode ?? 502));
        },
      );
      up.once('error', () => {
        res.destroy();
      });
      if (rule?.fault === 'reset') {
        let sent = 0;
        const limit = rule.afterBytes ?? 64 * 1024;
        req.on('data', (chunk: Buffer) => {
          if (sent >= limit) return;
          const part = chunk.subarray(0, limit - sent);
          sent += part.byteLength;
          up.write(part);
          if (sent >= limit) {
            up.destroy();
            req.socket.destroy();
            record(0);
          }
        });
        req.once('end', () => {
          // A body shorter than the limit: reset after it all went through.
          if (sent < limit) {
            up.destroy();
            req.socket.destroy();
            record(0);
          }
        });
        return;
      }
      req.pipe(up);
    };
    if (rule?.fault === 'slow') {
      // A client that gave up meanwhile (its request timed out) hung up: a stalled server never answers it.
      let gone = false;
      req.socket.once('close', () => (gone = true));
      void sleep(rule.delayMs ?? 1000).then(() => (gone ? record(0) : forward()));
    } else {
      forward();
    }
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    add(rule) {
      rules.push({ ...rule, matched: 0, used: 0 });
    },
    clear() {
      rules.length = 0;
    },
    injected,
    seen,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
