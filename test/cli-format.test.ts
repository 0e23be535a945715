import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient, ApiError } from '../src/cli/api-client.js';
import { formatAge, formatBytes, table } from '../src/cli/format.js';
import { downloadVerified } from '../src/cli/transfer.js';
import { waitForOperation } from '../src/cli/wait.js';

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1, '1 B'],
    [512, '512 B'],
    [999, '999 B'],
    [1000, '1 KB'],
    [1500, '1.5 KB'],
    [1234, '1.23 KB'],
    [12_345, '12.3 KB'],
    [123_456, '123 KB'],
    [999_999, '1 MB'],
    [50_000_000, '50 MB'],
    [2_300_000_000, '2.3 GB'],
    [2_345_678_901, '2.35 GB'],
    [1e12, '1 TB'],
  ])('%d -> %s', (n, expected) => {
    expect(formatBytes(n)).toBe(expected);
  });
});

describe('formatAge', () => {
  const now = new Date('2025-01-01T12:00:00Z');
  const ago = (seconds: number) => new Date(now.getTime() - seconds * 1000);
  it.each([
    [0, 'just now'],
    [44, 'just now'],
    [-30, 'just now'],
    [45, '1 minute ago'],
    [119, '1 minute ago'],
    [300, '5 minutes ago'],
    [3599, '59 minutes ago'],
    [3600, '1 hour ago'],
    [7200, '2 hours ago'],
    [86_399, '23 hours ago'],
    [86_400, '1 day ago'],
    [3 * 86_400, '3 days ago'],
  ])('%d s -> %s', (seconds, expected) => {
    expect(formatAge(ago(seconds), now)).toBe(expected);
  });

  it('accepts ISO strings as the API sends them', () => {
    expect(formatAge('2025-01-01T10:00:00Z', now)).toBe('2 hours ago');
  });
});

describe('table', () => {
  it('aligns columns with two spaces and no trailing spaces', () => {
    const out = table(
      ['ID', 'NAME', 'SIZE'],
      [
        ['snap_1', 'first', '50 MB'],
        ['snap_22', 'a-much-longer-name', ''],
      ],
    );
    expect(out).toBe(
      ['ID       NAME                SIZE', 'snap_1   first               50 MB', 'snap_22  a-much-longer-name'].join('\n'),
    );
  });

  it('prints only the header when there are no rows', () => {
    expect(table(['ID', 'NAME'], [])).toBe('ID  NAME');
  });
});

describe('ApiClient against a stub server', () => {
  let server: http.Server;
  let client: ApiClient;
  const archive = Buffer.from('not really a tarball, but bytes all the same\n'.repeat(1000));
  const archiveSha = createHash('sha256').update(archive).digest('hex');
  const seenAuth: (string | undefined)[] = [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      seenAuth.push(req.headers.authorization);
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      switch (req.url) {
        case '/v1/sandboxes/sb_missing':
          return json(404, { error: { code: 'not_found', message: 'sandbox sb_missing not found' } });
        case '/plain-error':
          res.writeHead(502, 'Bad Gateway');
          return res.end('<html>upstream died</html>');
        case '/wrong-shape':
          return json(500, { message: 'something else' });
        case '/ok':
          return json(200, { hello: 'world' });
        case '/v1/operations/op_failed':
          return json(200, {
            id: 'op_failed',
            type: 'restore',
            status: 'failed',
            error: { code: 'invalid_state', message: 'sandbox is paused' },
          });
        case '/archive':
          res.writeHead(200, { 'content-length': archive.length });
          return res.end(archive);
        default:
          return json(404, { error: { code: 'not_found', message: 'no route' } });
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    client = new ApiClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`, 'caged_sk_test');
  });

  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('parses a JSON body and sends the API key', async () => {
    await expect(client.request('GET', '/ok')).resolves.toEqual({ hello: 'world' });
    expect(seenAuth.at(-1)).toBe('Bearer caged_sk_test');
  });

  it('turns the API error shape into an ApiError', async () => {
    const err = await client.request('GET', '/v1/sandboxes/sb_missing').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 404, code: 'not_found', message: 'sandbox sb_missing not found' });
  });

  it('falls back to the status text when the body is not JSON', async () => {
    const err = await client.request('GET', '/plain-error').catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 502, code: 'http_502', message: 'Bad Gateway' });
  });

  it('falls back to the status text when the JSON is some other shape', async () => {
    const err = await client.request('GET', '/wrong-shape').catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 500, code: 'http_500', message: 'Internal Server Error' });
  });

  it('reports a failed operation with its id, status and error', async () => {
    await expect(waitForOperation(client, 'op_failed', { quiet: true })).rejects.toThrow(
      'operation op_failed failed: invalid_state: sandbox is paused',
    );
  });

  it('downloads to the final name only when the checksum matches', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'caged-cli-'));
    const file = path.join(dir, 'snap.tar.gz');
    await expect(downloadVerified(client, '/archive', file, archiveSha)).resolves.toBe(archive.length);
    expect(readFileSync(file).equals(archive)).toBe(true);
    expect(existsSync(`${file}.partial`)).toBe(false);

    const other = path.join(dir, 'bad.tar.gz');
    await expect(downloadVerified(client, '/archive', other, 'ab'.repeat(32))).rejects.toThrow(/^checksum mismatch/);
    expect(existsSync(other)).toBe(false);
    expect(existsSync(`${other}.partial`)).toBe(false);
  });
});
