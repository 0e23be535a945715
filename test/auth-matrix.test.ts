import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { gz, rawTar } from './support/tar-builder.js';

/**
 * Every route of the API, taken from the fastify instance itself (so a new route is covered the
 * day it is added), against every kind of wrong credential. Each cell asserts the exact status and
 * error code; afterwards nothing of account A's has changed and nothing was created.
 */

type Cred = 'none' | 'malformed' | 'unknown' | 'other_account' | 'operator' | 'account_on_admin';
type Expect = { status: number; code?: string; body?: (body: any) => void };
interface Cell {
  method: string;
  url: string;
  cred: Cred;
  headers: Record<string, string>;
  body?: string | Uint8Array;
  expect: Expect;
}

let stack: TestStack;
let url: string;
let keyA: string;
let keyB: string;
let accountA: string;
let accountB: string;
let A: ReturnType<typeof apiClient>;
let B: ReturnType<typeof apiClient>;
let sbA: string;
let snapA: string;
let opA: string;

const MALFORMED = (key: string) => ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer ', `Bearer ${key} extra`, key, `Token ${key}`, 'Bearer caged_sk_'];

beforeAll(async () => {
  stack = await startStack({ api: true, store: 'fs', catalog: 'postgres' });
  url = stack.apiUrl!;
  ({ id: accountA, apiKey: keyA } = await stack.newAccount('matrix-a'));
  ({ id: accountB, apiKey: keyB } = await stack.newAccount('matrix-b'));
  A = apiClient(url, keyA);
  B = apiClient(url, keyB);
  sbA = await A.createSandbox();
  expect((await A.call('PUT', `/v1/sandboxes/${sbA}/files/secret.txt`, 'A only\n')).status).toBe(204);
  const snap = await A.snapshot(sbA, 'a-snap');
  expect(snap.op.status).toBe('succeeded');
  snapA = snap.snapshotId;
  opA = snap.op.id;
});
afterAll(async () => stack?.close());

/** The route pattern with A's resources in it. */
function concrete(route: string, sandboxId = sbA): string {
  return route
    .replace(/^\/v1\/sandboxes\/:id/, `/v1/sandboxes/${sandboxId}`)
    .replace(/^\/v1\/snapshots\/:id/, `/v1/snapshots/${snapA}`)
    .replace(/^\/v1\/operations\/:id/, `/v1/operations/${opA}`)
    .replace(/\/files\/\*$/, '/files/secret.txt')
    .replace(/^\/v1\/downloads\/\*$/, `/v1/downloads/exports/${sbA}/${snapA}.tar.gz`);
}

/** A body that passes each route's validation, so a cross-account request reaches the ownership check. */
function requestBody(method: string, route: string): { body?: string | Uint8Array; headers: Record<string, string> } {
  const json = (v: unknown) => ({ body: JSON.stringify(v), headers: { 'content-type': 'application/json' } });
  if (method === 'PUT' && route.endsWith('/files/*')) return { body: 'planted by B', headers: { 'content-type': 'application/octet-stream' } };
  if (route.endsWith('/snapshots/import')) return { body: new Uint8Array(gz(rawTar([{ name: 'by-b.txt', data: Buffer.from('B') }]))), headers: { 'content-type': 'application/gzip' } };
  if (method !== 'POST') return { headers: {} };
  if (route === '/v1/sandboxes') return json({ from_snapshot: snapA });
  if (route === '/v1/sandboxes/:id/snapshots') return json({ name: 'by-b' });
  if (route === '/v1/sandboxes/:id/exec') return json({ command: ['touch', 'by-b'] });
  if (route === '/v1/admin/accounts') return json({});
  return json({});
}

const UNAUTHORIZED: Expect = { status: 401, code: 'unauthorized' };
const NOT_FOUND: Expect = { status: 404, code: 'not_found' };

/** What each route answers to each credential; undefined means the route is not classified (the test fails). */
function expectation(method: string, route: string, cred: Cred): Expect | undefined {
  if (route === '/healthz') return { status: 200, body: (b) => expect(b).toEqual({ ok: true }) };
  // The signature is the credential: no key of any kind opens a download without it.
  if (route === '/v1/downloads/*') return { status: 403, code: 'forbidden' };
  if (route.startsWith('/v1/admin/')) {
    if (cred === 'operator') {
      // Only the known admin route is called with the real token, with a body it refuses: no side effects.
      return route === '/v1/admin/accounts' && method === 'POST' ? { status: 400, code: 'invalid_input' } : undefined;
    }
    return UNAUTHORIZED;
  }
  if (!route.startsWith('/v1/')) return undefined;
  if (cred === 'account_on_admin') return undefined; // only for admin routes
  if (route === '/v1/sandboxes/:id/idle-timeout') {
    // The operator token is accepted here by design; aimed at a sandbox that does not exist, it changes nothing.
    if (cred === 'operator') return NOT_FOUND;
    if (cred === 'other_account') return NOT_FOUND;
    return UNAUTHORIZED;
  }
  if (cred !== 'other_account') return UNAUTHORIZED;
  // Another account's key: A's resources do not exist for B.
  if (route.includes(':id')) return NOT_FOUND;
  if (method === 'GET' && route === '/v1/sandboxes') return { status: 200, body: (b) => expect(b).toEqual({ sandboxes: [] }) };
  if (method === 'GET' && route === '/v1/operations') return { status: 200, body: (b) => expect(b).toEqual({ operations: [] }) };
  if (method === 'POST' && route === '/v1/sandboxes') return NOT_FOUND; // a fork of A's snapshot
  return undefined;
}

function credentialHeaders(cred: Cred): Array<Record<string, string>> {
  switch (cred) {
    case 'none':
      return [{}];
    case 'malformed':
      return MALFORMED(keyA).map((authorization) => ({ authorization }));
    case 'unknown':
      return [{ authorization: `Bearer caged_sk_${randomBytes(24).toString('base64url')}` }, { authorization: 'Bearer not-a-caged-key-at-all' }];
    case 'other_account':
      return [{ authorization: `Bearer ${keyB}` }];
    case 'operator':
      return [{ authorization: `Bearer ${stack.config.adminToken}` }];
    case 'account_on_admin':
      return [{ authorization: `Bearer ${keyA}` }];
  }
}

/** The credential under test is the only one sent: a client without a key of its own, with the cell's headers. */
const send = (cell: Cell) => apiClient(url).call(cell.method, cell.url, cell.body, cell.headers);

async function stateOfA() {
  const sandbox = (await A.call('GET', `/v1/sandboxes/${sbA}`)).body;
  const snaps = (await A.call('GET', `/v1/sandboxes/${sbA}/snapshots`)).body.snapshots.map((s: any) => [s.id, s.name, s.state]);
  const ops = (await A.call('GET', '/v1/operations')).body.operations.map((o: any) => [o.id, o.status]);
  const sessions = (await A.call('GET', `/v1/sandboxes/${sbA}/sessions`)).body;
  const root = stack.runtime.rootDir(sbA);
  const files = fs.readdirSync(root).sort();
  const secret = fs.readFileSync(path.join(root, 'secret.txt'), 'utf8');
  return { state: sandbox.state, last_active_at: sandbox.last_active_at, snaps, ops, sessions, files, secret };
}

/** Rows that belong to A or B (other test files share the database and write rows of their own). */
async function counts() {
  const ids = [accountA, accountB];
  const n = async (table: 'sandboxes' | 'snapshots' | 'operations' | 'idempotency_keys') =>
    Number((await stack.db.selectFrom(table).select((eb) => eb.fn.countAll<string>().as('n')).where('account_id', 'in', ids).executeTakeFirstOrThrow()).n);
  const sessions = Number(
    (
      await stack.db
        .selectFrom('sessions')
        .innerJoin('sandboxes', 'sandboxes.id', 'sessions.sandbox_id')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('sandboxes.account_id', 'in', ids)
        .executeTakeFirstOrThrow()
    ).n,
  );
  return { sandboxes: await n('sandboxes'), snapshots: await n('snapshots'), operations: await n('operations'), idempotency_keys: await n('idempotency_keys'), sessions };
}

describe('auth matrix', () => {
  it('covers every route the server registered', () => {
    const routes = stack.api!.routeList;
    const methods = routes.filter((r) => r.method !== 'HEAD');
    // The routes known when this test was written are all there (a rename must not drop one unnoticed).
    const keys = methods.map((r) => `${r.method} ${r.url}`);
    for (const known of [
      'GET /healthz',
      'POST /v1/admin/accounts',
      'POST /v1/sandboxes',
      'GET /v1/sandboxes',
      'GET /v1/sandboxes/:id',
      'DELETE /v1/sandboxes/:id',
      'PUT /v1/sandboxes/:id/files/*',
      'GET /v1/sandboxes/:id/files/*',
      'DELETE /v1/sandboxes/:id/files/*',
      'POST /v1/sandboxes/:id/exec',
      'GET /v1/sandboxes/:id/sessions',
      'POST /v1/sandboxes/:id/pause',
      'POST /v1/sandboxes/:id/resume',
      'POST /v1/sandboxes/:id/idle-timeout',
      'POST /v1/sandboxes/:id/snapshots',
      'GET /v1/sandboxes/:id/snapshots',
      'POST /v1/sandboxes/:id/snapshots/import',
      'GET /v1/snapshots/:id',
      'DELETE /v1/snapshots/:id',
      'POST /v1/snapshots/:id/restore',
      'POST /v1/snapshots/:id/export',
      'GET /v1/downloads/*',
      'GET /v1/operations',
      'GET /v1/operations/:id',
      'POST /v1/operations/:id/cancel',
      'POST /v1/operations/:id/retry',
    ]) {
      expect(keys, known).toContain(known);
    }
    // Every route is classified for every credential that applies to it.
    for (const r of methods) {
      const creds: Cred[] = r.url.startsWith('/v1/admin/') ? ['none', 'malformed', 'unknown', 'other_account', 'account_on_admin'] : ['none', 'malformed', 'unknown', 'other_account', 'operator'];
      for (const cred of creds) expect(expectation(r.method, r.url, cred), `${r.method} ${r.url} × ${cred}: add it to the auth matrix`).toBeDefined();
    }
    // HEAD routes are the GET routes' twins and answer as they do.
    for (const r of routes.filter((x) => x.method === 'HEAD')) expect(keys, `HEAD ${r.url}`).toContain(`GET ${r.url}`);
  });

  it('every route × {no key, malformed header, unknown key, other account, operator token, account key on admin}', async () => {
    const before = { a: await stateOfA(), counts: await counts() };
    const routes = stack.api!.routeList.filter((r) => r.method !== 'HEAD');
    const cells: Cell[] = [];
    for (const r of routes) {
      const admin = r.url.startsWith('/v1/admin/');
      const creds: Cred[] = admin ? ['none', 'malformed', 'unknown', 'other_account', 'account_on_admin', 'operator'] : ['none', 'malformed', 'unknown', 'other_account', 'operator'];
      for (const cred of creds) {
        const exp = expectation(r.method, r.url, cred);
        if (!exp) continue; // an admin route of unknown effect is not called with the real token
        const target = r.url === '/v1/sandboxes/:id/idle-timeout' && cred === 'operator' ? concrete(r.url, 'cage-zzzzzzzz') : concrete(r.url);
        const extra = r.url === '/v1/sandboxes/:id/snapshots/import' ? '?name=by-b' : r.url === '/v1/operations' ? `?sandbox_id=${sbA}` : '';
        const { body, headers } = requestBody(r.method, r.url);
        for (const h of credentialHeaders(cred)) {
          cells.push({ method: r.method, url: target + extra, cred, headers: { ...headers, ...h }, body, expect: exp });
        }
      }
    }
    expect(cells.length).toBeGreaterThan(150);
    const failures: string[] = [];
    for (const cell of cells) {
      const r = await send(cell);
      const where = `${cell.method} ${cell.url} × ${cell.cred} (${cell.headers.authorization ?? 'no header'})`;
      if (r.status !== cell.expect.status) failures.push(`${where}: ${r.status} ${JSON.stringify(r.body)}, expected ${cell.expect.status}`);
      else if (cell.expect.code) {
        if (JSON.stringify(r.body) !== JSON.stringify({ error: { code: cell.expect.code, message: r.body?.error?.message } }) || typeof r.body?.error?.message !== 'string') {
          failures.push(`${where}: body ${JSON.stringify(r.body)}, expected error ${cell.expect.code}`);
        }
      } else cell.expect.body?.(r.body);
      // No answer ever shows A's data to a wrong credential.
      expect(JSON.stringify(r.body ?? ''), where).not.toContain('A only');
    }
    expect(failures).toEqual([]);

    // Nothing of A's changed, and no row was created anywhere.
    expect(await stateOfA()).toEqual(before.a);
    expect(await counts()).toEqual(before.counts);
    expect((await B.call('GET', '/v1/sandboxes')).body).toEqual({ sandboxes: [] });
    expect(fs.existsSync(path.join(stack.runtime.rootDir(sbA), 'by-b'))).toBe(false);
  });

  it('HEAD twins refuse the same credentials', async () => {
    for (const r of stack.api!.routeList.filter((x) => x.method === 'HEAD' && x.url.startsWith('/v1/') && !x.url.startsWith('/v1/downloads/'))) {
      for (const cred of ['none', 'unknown', 'operator'] as const) {
        for (const h of credentialHeaders(cred)) {
          const res = await fetch(`${url}${concrete(r.url)}`, { method: 'HEAD', headers: h });
          expect(res.status, `HEAD ${r.url} × ${cred}`).toBe(401);
        }
      }
      const other = await fetch(`${url}${concrete(r.url)}`, { method: 'HEAD', headers: { authorization: `Bearer ${keyB}` } });
      expect(other.status, `HEAD ${r.url} × other account`).toBe(r.url.includes(':id') ? 404 : 200);
    }
  });
});
