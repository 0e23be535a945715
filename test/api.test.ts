import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient, rawRequest as sendRaw } from './support/http.js';

let stack: TestStack;
let url: string;
let keyA: string;
let keyB: string;
let A: ReturnType<typeof apiClient>;
let B: ReturnType<typeof apiClient>;
/** A's sandbox, with a file, a ready snapshot and the operation that made it. */
let sbA: string;
let snapA: string;
let opA: string;

const errorBody = (code: string) => ({ error: { code, message: expect.any(String) } });

/** Sends a request exactly as written: fetch would normalise `%2e%2e` segments away before sending. */
const rawRequest = (method: string, rawPath: string, key: string | undefined, body?: Buffer) => sendRaw(url, method, rawPath, { key, body });

async function getBytes(sandboxId: string, filePath: string, key = keyA) {
  const res = await fetch(`${url}/v1/sandboxes/${sandboxId}/files/${filePath}`, { headers: { authorization: `Bearer ${key}` } });
  return { status: res.status, type: res.headers.get('content-type'), bytes: Buffer.from(await res.arrayBuffer()) };
}

beforeAll(async () => {
  stack = await startStack({ api: true, store: 'fs', catalog: 'postgres' });
  url = stack.apiUrl!;
  keyA = (await stack.newAccount('account-a')).apiKey;
  keyB = (await stack.newAccount('account-b')).apiKey;
  A = apiClient(url, keyA);
  B = apiClient(url, keyB);
  sbA = await A.createSandbox();
  expect((await A.call('PUT', `/v1/sandboxes/${sbA}/files/secret.txt`, 'A only\n')).status).toBe(204);
  const snap = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, { name: 'a-snap' });
  expect(snap.status).toBe(202);
  snapA = snap.body.snapshot.id;
  opA = snap.body.operation.id;
  expect((await A.waitOp(opA)).status).toBe('succeeded');
});
afterAll(async () => stack?.close());

describe('authentication', () => {
  const routes: [string, string][] = [
    ['GET', '/v1/sandboxes'],
    ['POST', '/v1/sandboxes'],
    ['GET', '/v1/operations'],
    ['GET', '/v1/snapshots/snap-aaaaaaaa'],
  ];

  it('401 without a key, with a malformed key and with an unknown key', async () => {
    const noKey = apiClient(url);
    const malformed = apiClient(url, 'not-a-caged-key');
    const unknown = apiClient(url, `caged_sk_${randomBytes(24).toString('base64url')}`);
    for (const [method, p] of routes) {
      for (const client of [noKey, malformed, unknown]) {
        const r = await client.call(method, p, method === 'POST' ? {} : undefined);
        expect(r.status, `${method} ${p}`).toBe(401);
        expect(r.body).toEqual(errorBody('unauthorized'));
      }
    }
    // The route's own answers never leak past a missing key: not even whether the sandbox exists.
    expect((await noKey.call('GET', `/v1/sandboxes/${sbA}`)).status).toBe(401);
    expect((await noKey.call('GET', `/v1/sandboxes/${sbA}/files/secret.txt`)).status).toBe(401);
    // A Basic or an empty Bearer credential is no key either.
    for (const authorization of ['Basic dXNlcjpwYXNz', 'Bearer ', `Bearer ${keyA} extra`, keyA]) {
      const r = await fetch(`${url}/v1/sandboxes`, { headers: { authorization } });
      expect(r.status, authorization).toBe(401);
      expect(await r.json()).toEqual(errorBody('unauthorized'));
    }
  });

  it('a percent-encoded path is no way around the key', async () => {
    // The router decodes %76 to "v"; the request must still be authenticated.
    for (const p of ['/%761/sandboxes', `/%761/sandboxes/${sbA}`, `/%761/sandboxes/${sbA}/files/secret.txt`, `/v1/sandbox%65s/${sbA}`]) {
      const r = await rawRequest('GET', p, undefined);
      expect(r.status, p).toBe(401);
      expect(r.body, p).toEqual(errorBody('unauthorized'));
    }
    const del = await rawRequest('DELETE', `/%761/sandboxes/${sbA}`, undefined);
    expect(del.status).toBe(401);
    expect((await A.call('GET', `/v1/sandboxes/${sbA}`)).body.state).toBe('running');
  });

  it('the operator token is not an account key', async () => {
    const r = await apiClient(url, stack.config.adminToken).call('GET', '/v1/sandboxes');
    expect(r.status).toBe(401);
    expect(r.body).toEqual(errorBody('unauthorized'));
  });

  it('/healthz answers without auth', async () => {
    const r = await apiClient(url).call('GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ ok: true });
  });
});

describe('admin', () => {
  it('create-account needs the operator token', async () => {
    for (const key of [undefined, 'wrong-operator-token-0123456789', keyA, `${stack.config.adminToken}x`]) {
      const r = await apiClient(url, key).call('POST', '/v1/admin/accounts', { name: 'mallory' });
      expect(r.status, String(key)).toBe(401);
      expect(r.body).toEqual(errorBody('unauthorized'));
    }
  });

  it('creates an account whose key works and sees nothing of other accounts', async () => {
    const r = await apiClient(url, stack.config.adminToken).call('POST', '/v1/admin/accounts', { name: 'carol' });
    expect(r.status).toBe(201);
    expect(r.body).toEqual({ id: expect.stringMatching(/^acct-[a-z0-9]{8}$/), name: 'carol', api_key: expect.stringMatching(/^caged_sk_[A-Za-z0-9_-]{16,}$/) });
    const carol = apiClient(url, r.body.api_key);
    const list = await carol.call('GET', '/v1/sandboxes');
    expect(list.status).toBe(200);
    expect(list.body).toEqual({ sandboxes: [] });
    expect((await carol.call('GET', '/v1/operations')).body).toEqual({ operations: [] });

    const bad = await apiClient(url, stack.config.adminToken).call('POST', '/v1/admin/accounts', { name: '' });
    expect(bad.status).toBe(400);
    expect(bad.body).toEqual(errorBody('invalid_input'));
  });
});

describe('accounts are isolated', () => {
  it("B gets 404 not_found for everything of A's, and changes nothing", async () => {
    const attempts: [string, string, unknown?][] = [
      ['GET', `/v1/sandboxes/${sbA}`],
      ['GET', `/v1/sandboxes/${sbA}/files/secret.txt`],
      ['PUT', `/v1/sandboxes/${sbA}/files/planted.txt`, 'from B'],
      ['DELETE', `/v1/sandboxes/${sbA}/files/secret.txt`],
      ['GET', `/v1/sandboxes/${sbA}/snapshots`],
      ['GET', `/v1/sandboxes/${sbA}/sessions`],
      ['GET', `/v1/snapshots/${snapA}`],
      ['GET', `/v1/operations/${opA}`],
      ['POST', `/v1/sandboxes/${sbA}/snapshots`, { name: 'by-b' }],
      ['POST', `/v1/sandboxes/${sbA}/exec`, { command: ['touch', 'by-b'] }],
      ['POST', `/v1/sandboxes/${sbA}/pause`, {}],
      ['DELETE', `/v1/sandboxes/${sbA}`],
      ['DELETE', `/v1/snapshots/${snapA}`],
    ];
    for (const [method, p, body] of attempts) {
      const r = await B.call(method, p, body);
      expect(r.status, `${method} ${p}`).toBe(404);
      expect(r.body, `${method} ${p}`).toEqual(errorBody('not_found'));
      expect(JSON.stringify(r.body)).not.toContain('A only');
    }

    // Nothing of A's changed.
    const sandbox = await A.call('GET', `/v1/sandboxes/${sbA}`);
    expect(sandbox.status).toBe(200);
    expect(sandbox.body.state).toBe('running');
    const snaps = await A.call('GET', `/v1/sandboxes/${sbA}/snapshots`);
    expect(snaps.body.snapshots.map((s: any) => [s.id, s.name, s.state])).toEqual([[snapA, 'a-snap', 'ready']]);
    expect((await getBytes(sbA, 'secret.txt')).bytes.toString()).toBe('A only\n');
    expect((await A.call('GET', `/v1/sandboxes/${sbA}/files/planted.txt`)).status).toBe(404);
    expect(fs.existsSync(path.join(stack.runtime.rootDir(sbA), 'by-b'))).toBe(false);
    expect((await A.call('GET', `/v1/sandboxes/${sbA}/sessions`)).body).toEqual({ sessions: [] });
    const ops = await A.call('GET', `/v1/operations?sandbox_id=${sbA}`);
    expect(ops.body.operations.map((o: any) => o.id)).toEqual([opA]);
    expect((await B.call('GET', `/v1/operations?sandbox_id=${sbA}`)).body).toEqual({ operations: [] });
  });

  it("lists show only the account's own sandboxes", async () => {
    const sbB = await B.createSandbox();
    const listA = (await A.call('GET', '/v1/sandboxes')).body.sandboxes.map((s: any) => s.id);
    const listB = (await B.call('GET', '/v1/sandboxes')).body.sandboxes.map((s: any) => s.id);
    expect(listA).toContain(sbA);
    expect(listA).not.toContain(sbB);
    expect(listB).toEqual([sbB]);
    expect((await A.call('GET', `/v1/sandboxes/${sbB}`)).status).toBe(404);
  });
});

describe('sandboxes', () => {
  it('creates a sandbox with the given settings and lists it newest first', async () => {
    const r = await A.call('POST', '/v1/sandboxes', { template: 'base', resources: { cpu: 2, memory_mb: 2048 }, idle_timeout_s: 600 });
    expect(r.status).toBe(201);
    expect(r.body).toEqual({
      id: expect.stringMatching(/^cage-[a-z0-9]{8}$/),
      template: 'base',
      resources: { cpu: 2, memory_mb: 2048 },
      state: 'running',
      created_at: expect.any(String),
      last_active_at: expect.any(String),
      idle_timeout_s: 600,
    });
    expect(new Date(r.body.created_at).toISOString()).toBe(r.body.created_at);
    const one = await A.call('GET', `/v1/sandboxes/${r.body.id}`);
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ id: r.body.id, template: 'base', resources: { cpu: 2, memory_mb: 2048 }, idle_timeout_s: 600 });
    const list = (await A.call('GET', '/v1/sandboxes')).body.sandboxes;
    expect(list[0].id).toBe(r.body.id);
    expect(list.map((s: any) => s.id)).toContain(sbA);

    expect((await A.call('GET', '/v1/sandboxes/cage-zzzzzzzz')).body).toEqual(errorBody('not_found'));
    expect((await A.call('GET', '/v1/sandboxes/cage-zzzzzzzz')).status).toBe(404);
  });

  it('DELETE answers 202 with the operation, then the sandbox is gone', async () => {
    const id = await A.createSandbox();
    const r = await A.call('DELETE', `/v1/sandboxes/${id}`);
    expect(r.status).toBe(202);
    expect(r.body.operation).toMatchObject({ type: 'delete_sandbox', sandbox_id: id });
    expect((await A.waitOp(r.body.operation.id)).status).toBe('succeeded');
    const gone = await A.call('GET', `/v1/sandboxes/${id}`);
    expect(gone.status).toBe(404);
    expect(gone.body).toEqual(errorBody('not_found'));
  });
});

describe('invalid input', () => {
  it('a body that is not JSON', async () => {
    // An empty body is no body (bad-input.test.ts), not bad JSON.
    for (const body of ['{"template":', 'not json', ' x']) {
      const r = await A.call('POST', '/v1/sandboxes', body, { 'content-type': 'application/json' });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body).toEqual(errorBody('invalid_input'));
    }
    const snap = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, '{name: x}', { 'content-type': 'application/json' });
    expect(snap.status).toBe(400);
    expect(snap.body).toEqual(errorBody('invalid_input'));
  });

  it('an unknown field, or a field of the wrong type', async () => {
    const bodies = [
      { colour: 'blue' },
      { template: 'base', extra: 1 },
      { resources: { cpu: 1, memory_mb: 1024, gpu: 1 } },
      { resources: { cpu: 'two', memory_mb: 1024 } },
      { idle_timeout_s: -1 },
      { template: 'Not A Template' },
    ];
    for (const body of bodies) {
      const r = await A.call('POST', '/v1/sandboxes', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body).toEqual(errorBody('invalid_input'));
    }
    const snap = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, { name: 'ok', kind: 'auto' });
    expect(snap.status).toBe(400);
    expect(snap.body).toEqual(errorBody('invalid_input'));
    const ops = await A.call('GET', '/v1/operations?colour=blue');
    expect(ops.status).toBe(400);
    expect(ops.body).toEqual(errorBody('invalid_input'));
    const status = await A.call('GET', '/v1/operations?status=sleeping');
    expect(status.status).toBe(400);
    expect(status.body).toEqual(errorBody('invalid_input'));
  });

  it('an id of the wrong format', async () => {
    for (const p of ['/v1/sandboxes/nope', '/v1/sandboxes/cage-ABCDEFGH', '/v1/sandboxes/cage-1234567', '/v1/sandboxes/snap-12345678/snapshots', '/v1/snapshots/cage-12345678', '/v1/snapshots/snap-123456789']) {
      const r = await A.call('GET', p);
      expect(r.status, p).toBe(400);
      expect(r.body).toEqual(errorBody('invalid_input'));
    }
    const del = await A.call('DELETE', '/v1/snapshots/bad-id');
    expect(del.status).toBe(400);
    expect(del.body).toEqual(errorBody('invalid_input'));
  });

  it('a bad snapshot name', async () => {
    for (const name of ['', 'has space', 'slash/name', 'x'.repeat(64), 'ünï', 42]) {
      const r = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, { name });
      expect(r.status, JSON.stringify(name)).toBe(400);
      expect(r.body).toEqual(errorBody('invalid_input'));
    }
    const missing = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, {});
    expect(missing.status).toBe(400);
    expect(missing.body).toEqual(errorBody('invalid_input'));
    // None of them left a snapshot behind.
    expect((await A.call('GET', `/v1/sandboxes/${sbA}/snapshots`)).body.snapshots.map((s: any) => s.id)).toEqual([snapA]);
  });

  it('a request body over the limit is 413', async () => {
    const r = await A.call('POST', '/v1/sandboxes', { template: 'x'.repeat(2 * 1024 * 1024) });
    expect(r.status).toBe(413);
    expect(r.body).toEqual(errorBody('too_large'));
  });
});

describe('files', () => {
  it('round-trips exact bytes, binary and nested', async () => {
    const allBytes = Buffer.from(Array.from({ length: 256 * 4 }, (_, i) => i % 256));
    const random = randomBytes(300_000);
    const cases: [string, Buffer][] = [
      ['plain.txt', Buffer.from('hello\r\nworld\n\u00e9\u4e2d')],
      ['bin/all-bytes.bin', allBytes],
      ['deep/er/and/deeper/random.bin', random],
      ['empty', Buffer.alloc(0)],
      ['name with spaces.txt', Buffer.from('spaced')],
    ];
    for (const [p, bytes] of cases) {
      const put = await A.call('PUT', `/v1/sandboxes/${sbA}/files/${p.split('/').map(encodeURIComponent).join('/')}`, new Uint8Array(bytes), {
        'content-type': 'application/octet-stream',
      });
      expect(put.status, p).toBe(204);
    }
    for (const [p, bytes] of cases) {
      const got = await getBytes(sbA, p.split('/').map(encodeURIComponent).join('/'));
      expect(got.status, p).toBe(200);
      expect(got.type).toBe('application/octet-stream');
      expect(got.bytes.equals(bytes), p).toBe(true);
      // And it is really there, at that path inside the sandbox.
      expect(fs.readFileSync(path.join(stack.runtime.rootDir(sbA), p)).equals(bytes), p).toBe(true);
    }
    // A JSON content type is stored as bytes too, not parsed.
    const json = await A.call('PUT', `/v1/sandboxes/${sbA}/files/conf/settings.json`, '{"a": 1,  "b":[2]}', { 'content-type': 'application/json' });
    expect(json.status).toBe(204);
    expect((await getBytes(sbA, 'conf/settings.json')).bytes.toString()).toBe('{"a": 1,  "b":[2]}');
    // Overwrite replaces the whole file.
    expect((await A.call('PUT', `/v1/sandboxes/${sbA}/files/plain.txt`, 'new')).status).toBe(204);
    expect((await getBytes(sbA, 'plain.txt')).bytes.toString()).toBe('new');
  });

  it('GET of a missing file is 404; DELETE removes a file', async () => {
    const missing = await A.call('GET', `/v1/sandboxes/${sbA}/files/does/not/exist.txt`);
    expect(missing.status).toBe(404);
    expect(missing.body).toEqual(errorBody('not_found'));

    expect((await A.call('PUT', `/v1/sandboxes/${sbA}/files/doomed.txt`, 'bye')).status).toBe(204);
    expect((await A.call('DELETE', `/v1/sandboxes/${sbA}/files/doomed.txt`)).status).toBe(204);
    const gone = await A.call('GET', `/v1/sandboxes/${sbA}/files/doomed.txt`);
    expect(gone.status).toBe(404);
    expect(gone.body).toEqual(errorBody('not_found'));
    expect(fs.existsSync(path.join(stack.runtime.rootDir(sbA), 'doomed.txt'))).toBe(false);
  });

  it('a missing path is 400', async () => {
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const r = await A.call(method, `/v1/sandboxes/${sbA}/files/`, method === 'PUT' ? 'x' : undefined);
      expect(r.status, method).toBe(400);
      expect(r.body).toEqual(errorBody('invalid_input'));
      expect(r.body.error.message).toContain('file path is required');
    }
  });

  it('a path escaping the sandbox with .. is 400 and touches nothing outside', async () => {
    const root = stack.runtime.rootDir(sbA);
    const outside = path.dirname(root);
    const before = fs.readdirSync(outside).sort();
    const paths = ['%2e%2e/escaped.txt', 'sub/%2e%2e/%2e%2e/escaped.txt', '%2E%2E/%2E%2E/escaped.txt', '%2e%2e%2fescaped.txt', 'a/%2e%2e'];
    for (const p of paths) {
      for (const method of ['PUT', 'GET', 'DELETE']) {
        const r = await rawRequest(method, `/v1/sandboxes/${sbA}/files/${p}`, keyA, method === 'PUT' ? Buffer.from('escaped') : undefined);
        expect(r.status, `${method} ${p}`).toBe(400);
        expect(r.body, `${method} ${p}`).toEqual(errorBody('invalid_input'));
        expect(r.body.error.message).toContain("must not contain '..'");
      }
    }
    expect(fs.readdirSync(outside).sort()).toEqual(before);
    expect(fs.existsSync(path.join(root, 'escaped.txt'))).toBe(false);
    expect(fs.existsSync(path.join(root, 'sub'))).toBe(false);
  });
});

describe('snapshots', () => {
  it('a duplicate name is 409 name_taken, and the list is newest first', async () => {
    const dup = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, { name: 'a-snap' });
    expect(dup.status).toBe(409);
    expect(dup.body).toEqual(errorBody('name_taken'));

    const second = await A.snapshot(sbA, 'b-snap');
    expect(second.op.status).toBe('succeeded');
    const list = (await A.call('GET', `/v1/sandboxes/${sbA}/snapshots`)).body.snapshots;
    expect(list.map((s: any) => s.id)).toEqual([second.snapshotId, snapA]);
    const one = await A.call('GET', `/v1/snapshots/${second.snapshotId}`);
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ id: second.snapshotId, sandbox_id: sbA, name: 'b-snap', kind: 'manual', state: 'ready' });
    expect(one.body.size_bytes).toBeGreaterThan(0);
    expect(one.body.sha256).toMatch(/^[0-9a-f]{64}$/);

    const ops = (await A.call('GET', `/v1/operations?sandbox_id=${sbA}&type=create_snapshot&status=succeeded`)).body.operations;
    expect(ops.map((o: any) => o.snapshot_id)).toEqual([second.snapshotId, snapA]);
  });

  it('Idempotency-Key: a repeated POST returns the same snapshot and operation, a different body conflicts', async () => {
    const id = await A.createSandbox();
    const key = `idem-${randomBytes(6).toString('hex')}`;
    const first = await A.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'once' }, { 'idempotency-key': key });
    expect(first.status).toBe(202);
    expect(first.body.snapshot).toMatchObject({ id: expect.stringMatching(/^snap-[a-z0-9]{8}$/), name: 'once', state: 'pending' });
    expect(first.body.operation).toMatchObject({ type: 'create_snapshot', status: 'running' });

    const second = await A.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'once' }, { 'idempotency-key': key });
    expect(second.status).toBe(202);
    expect(second.body.snapshot.id).toBe(first.body.snapshot.id);
    expect(second.body.operation.id).toBe(first.body.operation.id);
    expect(second.headers.get('idempotent-replayed')).toBe('true');

    const other = await A.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'twice' }, { 'idempotency-key': key });
    expect(other.status).toBe(409);
    expect(other.body).toEqual(errorBody('conflict'));

    expect((await A.waitOp(first.body.operation.id)).status).toBe('succeeded');
    const third = await A.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'once' }, { 'idempotency-key': key });
    expect(third.status).toBe(202);
    expect(third.body.operation.id).toBe(first.body.operation.id);

    const list = (await A.call('GET', `/v1/sandboxes/${id}/snapshots`)).body.snapshots;
    expect(list.map((s: any) => s.id)).toEqual([first.body.snapshot.id]);
    const ops = (await A.call('GET', `/v1/operations?sandbox_id=${id}`)).body.operations;
    expect(ops.map((o: any) => o.id)).toEqual([first.body.operation.id]);

    // The key belongs to account A: B using it starts its own request.
    const b = await B.createSandbox();
    const bSnap = await B.call('POST', `/v1/sandboxes/${b}/snapshots`, { name: 'once' }, { 'idempotency-key': key });
    expect(bSnap.status).toBe(202);
    expect(bSnap.body.snapshot.id).not.toBe(first.body.snapshot.id);
    expect((await B.waitOp(bSnap.body.operation.id)).status).toBe('succeeded');
  });

  it('a failed request does not hold its Idempotency-Key', async () => {
    const key = `idem-${randomBytes(6).toString('hex')}`;
    const bad = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, { name: 'a-snap' }, { 'idempotency-key': key });
    expect(bad.status).toBe(409);
    expect(bad.body).toEqual(errorBody('name_taken'));
    const retry = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, { name: 'c-snap' }, { 'idempotency-key': key });
    expect(retry.status).toBe(202);
    expect((await A.waitOp(retry.body.operation.id)).status).toBe('succeeded');
  });
});

describe('exec and sessions', () => {
  it('runs commands and records them in order with their exit codes', async () => {
    const id = await A.createSandbox();
    const r1 = await A.call('POST', `/v1/sandboxes/${id}/exec`, { command: ['sh', '-c', 'echo out; echo err >&2; exit 3'] });
    expect(r1.status).toBe(200);
    expect(r1.body).toEqual({ exit_code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect(await A.exec(id, ['echo', 'hello'])).toEqual({ exit_code: 0, stdout: 'hello\n', stderr: '' });
    expect(await A.exec(id, ['sh', '-c', 'printf %s "$(pwd)"'])).toMatchObject({ exit_code: 0 });
    const bg = await A.exec(id, ['sleep', '30'], true);
    expect(bg).toEqual({ pid: expect.any(Number) });
    expect(await A.exec(id, ['false'])).toEqual({ exit_code: 1, stdout: '', stderr: '' });

    const s = await A.call('GET', `/v1/sandboxes/${id}/sessions`);
    expect(s.status).toBe(200);
    const sessions = s.body.sessions;
    expect(sessions.map((x: any) => [x.command, x.background, x.exit_code])).toEqual([
      [['sh', '-c', 'echo out; echo err >&2; exit 3'], false, 3],
      [['echo', 'hello'], false, 0],
      [['sh', '-c', 'printf %s "$(pwd)"'], false, 0],
      [['sleep', '30'], true, null],
      [['false'], false, 1],
    ]);
    expect(sessions[3].pid).toBe(bg.pid);
    expect(sessions[3].finished_at).toBeNull();
    for (const i of [0, 1, 2, 4]) expect(typeof sessions[i].finished_at).toBe('string');
    const ids = sessions.map((x: any) => x.id);
    expect([...ids].sort((a: number, b: number) => a - b)).toEqual(ids);
  });

  it('an empty command is 400', async () => {
    for (const body of [{ command: [] }, { command: 'ls' }, {}, { command: ['ls'], shell: true }]) {
      const r = await A.call('POST', `/v1/sandboxes/${sbA}/exec`, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body).toEqual(errorBody('invalid_input'));
    }
  });

  it('exec disabled is 400 exec_disabled', async () => {
    const off = await startStack({ api: true, store: 'fs', catalog: 'postgres', workers: false, config: { execEnabled: false } });
    try {
      const c = apiClient(off.apiUrl!, (await off.newAccount('no-exec')).apiKey);
      const id = await c.createSandbox();
      const r = await c.call('POST', `/v1/sandboxes/${id}/exec`, { command: ['touch', 'ran'] });
      expect(r.status).toBe(400);
      expect(r.body).toEqual(errorBody('exec_disabled'));
      expect(fs.existsSync(path.join(off.runtime.rootDir(id), 'ran'))).toBe(false);
      expect((await c.call('GET', `/v1/sandboxes/${id}/sessions`)).body).toEqual({ sessions: [] });
    } finally {
      await off.close();
    }
  });
});
