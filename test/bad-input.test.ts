import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import Fastify from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient, rawRequest as sendRaw } from './support/http.js';
import { gz, gzipWithZeros, rawTar, ustarHeader } from './support/tar-builder.js';
import { buildServer } from '../src/api/server.js';
import { errorHandler } from '../src/api/errors.js';
import { apiLogSerializers, logUrl, scrubSignedUrls } from '../src/api/input-guards.js';
import { signDownload } from '../src/shared/signed-url.js';
import { loadConfig } from '../src/config.js';
import { MiB } from './support/wait.js';

/**
 * Issue 8, "Bad input and access": inputs that used to reach PostgreSQL, the file system or the
 * JSON serialiser and came back as 500s; limits on what a request may make the server write; the
 * request log and signed URLs; what sandbox processes see of the service. Every refusal is checked
 * for its exact status and code, and for what it left behind (rows, files, blobs).
 */

const MAX_SANDBOXES = 3;
const MAX_UPLOAD = 1 * MiB;
const MAX_SNAPSHOT = 4 * MiB;

let stack: TestStack;
let url: string;
let keyA: string;
let accountA: string;
let A: ReturnType<typeof apiClient>;
let sbA: string;

const errorBody = (code: string) => ({ error: { code, message: expect.any(String) } });

const rawRequest = (method: string, rawPath: string, opts?: Parameters<typeof sendRaw>[3]) => sendRaw(url, method, rawPath, opts);

/** Writes bytes on a bare socket and returns what came back: for requests Node's parser refuses. */
function rawSocket(bytes: string): Promise<{ status: number; body: any }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(u.port), u.hostname, () => socket.write(bytes));
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const [head, ...rest] = text.split('\r\n\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head ?? '')?.[1]);
      let body: unknown = rest.join('\r\n\r\n');
      try {
        body = JSON.parse(body as string);
      } catch {
        /* raw */
      }
      resolve({ status, body });
    });
  });
}

async function count(table: 'accounts' | 'sandboxes' | 'snapshots' | 'sessions' | 'idempotency_keys', where?: [string, string]) {
  let q = stack.db.selectFrom(table).select((eb) => eb.fn.countAll<string>().as('n'));
  if (where) q = q.where(where[0] as any, '=', where[1]);
  return Number((await q.executeTakeFirstOrThrow()).n);
}

/** Every entry under dir (only non-directories with filesOnly), relative, sorted; symlinks are listed, never followed. */
function listTree(dir: string, filesOnly = false): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const d of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) {
        if (!filesOnly) out.push(r);
        walk(r);
      } else out.push(r);
    }
  };
  if (fs.existsSync(dir)) walk('');
  return out.sort();
}

beforeAll(async () => {
  stack = await startStack({
    api: true,
    store: 'fs',
    catalog: 'postgres',
    limits: { maxSandboxesPerAccount: MAX_SANDBOXES, maxFileUploadBytes: MAX_UPLOAD, maxSnapshotBytes: MAX_SNAPSHOT },
  });
  url = stack.apiUrl!;
  ({ id: accountA, apiKey: keyA } = await stack.newAccount('bad-input-a'));
  A = apiClient(url, keyA);
  sbA = await A.createSandbox();
});
afterAll(async () => stack?.close());

describe('JSON that used to be a 500', () => {
  it('deeply nested JSON on an idempotent POST is 400 invalid_input, with or without Idempotency-Key, and stores nothing', async () => {
    const keysBefore = await count('idempotency_keys', ['account_id', accountA]);
    const snapsBefore = await count('snapshots', ['sandbox_id', sbA]);
    const depth = 300_000;
    const deep = `{"name":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    for (const headers of [{}, { 'idempotency-key': 'deep-json-1' }] as Record<string, string>[]) {
      for (const p of [`/v1/sandboxes/${sbA}/snapshots`, '/v1/sandboxes', `/v1/sandboxes/${sbA}/pause`]) {
        const r = await A.call('POST', p, deep, { 'content-type': 'application/json', ...headers });
        expect(r.status, `${p} ${JSON.stringify(headers)}`).toBe(400);
        expect(r.body).toEqual(errorBody('invalid_input'));
        expect(r.body.error.message).toContain('nests deeper than 32');
      }
    }
    // Just past the bound is refused; at it, the body reaches validation (which refuses an array name).
    const at = (n: number) => `{"name":${'['.repeat(n - 1)}${']'.repeat(n - 1)}}`;
    const past = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, at(33), { 'content-type': 'application/json', 'idempotency-key': 'deep-json-2' });
    expect(past.status).toBe(400);
    expect(past.body.error.message).toContain('nests deeper');
    const within = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, at(32), { 'content-type': 'application/json', 'idempotency-key': 'deep-json-3' });
    expect(within.status).toBe(400);
    expect(within.body).toEqual(errorBody('invalid_input'));
    expect(within.body.error.message).not.toContain('nests deeper');
    // Brackets inside strings are text, not depth.
    const text = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, { name: '['.repeat(100) });
    expect(text.status).toBe(400);
    expect(text.body.error.message).not.toContain('nests deeper');
    // Prototype poisoning is still refused by the parser.
    const proto = await A.call('POST', '/v1/sandboxes', '{"__proto__":{"x":1}}', { 'content-type': 'application/json' });
    expect(proto.status).toBe(400);
    expect(proto.body).toEqual(errorBody('invalid_input'));

    expect(await count('idempotency_keys', ['account_id', accountA])).toBe(keysBefore);
    expect(await count('snapshots', ['sandbox_id', sbA])).toBe(snapsBefore);
    expect(await count('sandboxes', ['account_id', accountA])).toBe(1);
  });
});

describe('an empty body sent as application/json', () => {
  it('counts as no body: delete and cancel answer as they do without one; a route that needs a body names what is missing', async () => {
    const json = { 'content-type': 'application/json' };
    const named = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, '', json);
    expect(named.status).toBe(400);
    expect(named.body).toEqual({ error: { code: 'invalid_input', message: 'name: Invalid input: expected string, received undefined' } });
    const { op, snapshotId } = await A.snapshot(sbA, 'empty-body');
    expect(op.status).toBe('succeeded');
    // Finished: refused for its state, not for its body.
    const cancel = await A.call('POST', `/v1/operations/${op.id}/cancel`, '', json);
    expect(cancel.status).toBe(409);
    expect(cancel.body).toEqual({ error: { code: 'invalid_state', message: `operation ${op.id} is already succeeded` } });
    const del = await A.call('DELETE', `/v1/snapshots/${op.snapshot_id}`, ' \n', json);
    expect(del.status, JSON.stringify(del.body)).toBe(202);
    expect((await A.waitOp(del.body.operation.id)).status).toBe('succeeded');
  });
});

describe('NUL bytes never reach PostgreSQL', () => {
  it('in path parameters and query values: 400 invalid_input', async () => {
    for (const p of [
      '/v1/operations/%00',
      '/v1/operations/op-pause-%00aaaaaaaaaaa',
      '/v1/operations?sandbox_id=%00',
      `/v1/operations?sandbox_id=${sbA}%00`,
      '/v1/operations?status=%00',
      '/v1/sandboxes/%00',
      '/v1/snapshots/%00',
      `/v1/sandboxes/${sbA}/files/a%00b`,
      `/v1/sandboxes/${sbA}/snapshots/import?name=a%00b`,
    ]) {
      const r = await rawRequest(p.includes('import') ? 'POST' : 'GET', p, { key: keyA });
      expect(r.status, p).toBe(400);
      expect(r.body, p).toEqual(errorBody('invalid_input'));
    }
    // Ids are checked by their format, not looked up: a well-formed unknown id is 404, a malformed one 400.
    expect((await A.call('GET', '/v1/operations/op-pause-aaaaaaaaaaaa')).status).toBe(404);
    expect((await A.call('GET', '/v1/operations/not-an-op')).body).toEqual(errorBody('invalid_input'));
    expect((await A.call('GET', '/v1/operations?sandbox_id=nope')).body).toEqual(errorBody('invalid_input'));
  });

  it('in JSON strings (account name, exec argument, snapshot name, object keys): 400 invalid_input, no row written', async () => {
    const admin = apiClient(url, stack.config.adminToken);
    for (const name of ['evil\u0000name', '\u0000', 'evil\ud800']) {
      const r = await admin.call('POST', '/v1/admin/accounts', { name });
      expect(r.status).toBe(400);
      expect(r.body).toEqual(errorBody('invalid_input'));
    }
    // (Other test files add accounts to this database; none of these names may have been stored in any form.)
    expect(await stack.db.selectFrom('accounts').select('id').where('name', 'like', 'evil%').execute()).toEqual([]);

    const sessions = await count('sessions', ['sandbox_id', sbA]);
    // An unpaired surrogate is refused as well: jsonb (exec history) cannot store it either.
    for (const command of [['echo', 'a\u0000b'], ['\u0000'], ['sh', '-c', 'true', '\u0000'], ['echo', '\ud800'], ['echo', 'x\udc00']]) {
      const r = await A.call('POST', `/v1/sandboxes/${sbA}/exec`, { command });
      expect(r.status, JSON.stringify(command)).toBe(400);
      expect(r.body).toEqual(errorBody('invalid_input'));
    }
    expect(await count('sessions', ['sandbox_id', sbA])).toBe(sessions);

    const snaps = await count('snapshots', ['sandbox_id', sbA]);
    for (const body of [{ name: 'a\u0000' }, { ['na\u0000me']: 'x' }]) {
      const r = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots`, body, { 'idempotency-key': 'nul-key' });
      expect(r.status).toBe(400);
      expect(r.body).toEqual(errorBody('invalid_input'));
    }
    expect(await count('snapshots', ['sandbox_id', sbA])).toBe(snaps);
  });
});

describe('files API: long names', () => {
  it('a path component over 255 bytes is 400 invalid_input, names no server path, and creates nothing', async () => {
    const root = stack.runtime.rootDir(sbA);
    const before = listTree(root);
    const long = 'a'.repeat(256);
    const wide = '\u00e9'.repeat(128); // 256 bytes in 128 characters
    for (const p of [long, `newdir/sub/${long}`, `newdir/${long}/file.txt`, `newdir/${encodeURIComponent(wide)}`]) {
      for (const method of ['PUT', 'GET', 'DELETE']) {
        const r = await A.call(method, `/v1/sandboxes/${sbA}/files/${p}`, method === 'PUT' ? 'data' : undefined);
        expect(r.status, `${method} ${p.slice(0, 40)}`).toBe(400);
        expect(r.body).toEqual(errorBody('invalid_input'));
        expect(r.body.error.message).toContain('longer than 255 bytes');
        expect(r.body.error.message).not.toContain(stack.dir);
        expect(r.body.error.message).not.toContain(root);
      }
    }
    const tooLongPath = Array.from({ length: 40 }, () => 'd'.repeat(100)).join('/');
    const deepR = await A.call('PUT', `/v1/sandboxes/${sbA}/files/${tooLongPath}`, 'x');
    expect(deepR.status).toBe(400);
    expect(deepR.body).toEqual(errorBody('invalid_input'));
    expect(listTree(root)).toEqual(before);

    // 255 bytes is still a good name, and its upload leaves no temporary file beside it.
    const ok = 'b'.repeat(255);
    expect((await A.call('PUT', `/v1/sandboxes/${sbA}/files/named/${ok}`, 'fits')).status).toBe(204);
    expect(fs.readdirSync(path.join(root, 'named'))).toEqual([ok]);
    expect((await A.call('DELETE', `/v1/sandboxes/${sbA}/files/named/${ok}`)).status).toBe(204);
    fs.rmdirSync(path.join(root, 'named'));
  });
});

describe('unexpected failures', () => {
  it("a 500 names the request, not the server's paths or a signed URL's credentials", async () => {
    const app = Fastify();
    app.setErrorHandler(errorHandler);
    app.get('/boom', async () => {
      throw new Error("EACCES: permission denied, open '/srv/caged/data/sandboxes/cage-x/root/f' via http://h/v1/downloads/k?expires=1&sig=SECRETSIG");
    });
    const r = await app.inject({ method: 'GET', url: '/boom' });
    await app.close();
    expect(r.statusCode).toBe(500);
    const body = r.json();
    expect(body).toEqual({ error: { code: 'internal', message: expect.stringContaining('EACCES: permission denied') } });
    expect(body.error.message).toContain("open '<path>'");
    expect(body.error.message).toMatch(/\(request req-[0-9a-z]+\)$/);
    expect(body.error.message).not.toContain('/srv/caged');
    expect(body.error.message).not.toContain('SECRETSIG');
  });
});

describe('symlinks and traversal through the files API', () => {
  it("links planted by the sandbox's own processes carry no read, write or delete outside it", async () => {
    const other = await stack.newAccount('bad-input-victim');
    const victim = apiClient(url, other.apiKey);
    const victimSb = await victim.createSandbox();
    expect((await victim.call('PUT', `/v1/sandboxes/${victimSb}/files/secret.txt`, 'victim only')).status).toBe(204);
    const victimRoot = stack.runtime.rootDir(victimSb);
    const root = stack.runtime.rootDir(sbA);
    // What a user can do from inside: links to /, to another sandbox's root, up the tree, and a dangling one.
    const links: [string, string][] = [
      ['to-slash', '/'],
      ['to-victim', victimRoot],
      ['up', '../..'],
      ['victim-secret', path.join(victimRoot, 'secret.txt')],
      ['dangling', path.join(victimRoot, 'not-yet.txt')],
    ];
    for (const [name, target] of links) fs.symlinkSync(target, path.join(root, name));
    try {
      const outsideBefore = listTree(path.dirname(root));
      const victimBefore = listTree(victimRoot);
      const tries = ['to-slash/etc/hostname', 'to-victim/secret.txt', 'to-victim/planted.txt', 'up/up.txt', 'victim-secret', 'dangling', 'to-victim'];
      for (const p of tries) {
        for (const method of ['GET', 'PUT', 'DELETE']) {
          const r = await A.call(method, `/v1/sandboxes/${sbA}/files/${p}`, method === 'PUT' ? 'pwned' : undefined);
          expect(r.status, `${method} ${p}`).toBe(400);
          expect(r.body, `${method} ${p}`).toEqual(errorBody('invalid_input'));
          expect(JSON.stringify(r.body)).not.toContain('victim only');
        }
      }
      // Encoded traversal and separators are refused as well.
      for (const p of ['%2e%2e/%2e%2e/x', 'a/%2E%2E/%2e%2e/%2e%2e/x', '%2e%2e%2f%2e%2e%2fx']) {
        const r = await rawRequest('PUT', `/v1/sandboxes/${sbA}/files/${p}`, { key: keyA, body: Buffer.from('pwned') });
        expect(r.status, p).toBe(400);
        expect(r.body, p).toEqual(errorBody('invalid_input'));
      }
      expect(listTree(path.dirname(root))).toEqual(outsideBefore);
      expect(listTree(victimRoot)).toEqual(victimBefore);
      expect(fs.readFileSync(path.join(victimRoot, 'secret.txt'), 'utf8')).toBe('victim only');
      expect(fs.existsSync(path.join(victimRoot, 'not-yet.txt'))).toBe(false);
    } finally {
      for (const [name] of links) fs.rmSync(path.join(root, name), { force: true });
    }
  });
});

describe('router and HTTP-parser errors keep the documented shape', () => {
  it('414 for a path parameter longer than the router takes', async () => {
    const r = await rawRequest('GET', `/v1/operations/${'o'.repeat(200)}`, { key: keyA });
    expect(r.status).toBe(414);
    expect(r.body).toEqual(errorBody('too_large'));
  });

  it('400 for an invalid %-escape', async () => {
    for (const p of ['/v1/sandboxes/%E0%A4%A', '/v1/snapshots/%']) {
      const r = await rawRequest('GET', p, { key: keyA });
      expect(r.status, p).toBe(400);
      expect(r.body, p).toEqual(errorBody('invalid_input'));
    }
  });

  it('431 for headers or a request line too large, 400 for a malformed request', async () => {
    const big = await rawRequest('GET', '/v1/sandboxes', { key: keyA, headers: { 'x-filler': 'f'.repeat(20_000) } });
    expect(big.status).toBe(431);
    expect(big.body).toEqual(errorBody('too_large'));
    const longUrl = await rawRequest('GET', `/v1/sandboxes?x=${'q'.repeat(20_000)}`, { key: keyA });
    expect(longUrl.status).toBe(431);
    expect(longUrl.body).toEqual(errorBody('too_large'));
    const garbage = await rawSocket('THIS IS NOT HTTP\r\n\r\n');
    expect(garbage.status).toBe(400);
    expect(garbage.body).toEqual(errorBody('invalid_input'));
  });
});

describe('limits', () => {
  it('a file upload over CAGED_MAX_FILE_UPLOAD_BYTES is 413 too_large and leaves no partial file or directory', async () => {
    const root = stack.runtime.rootDir(sbA);
    const before = listTree(root);
    // Declared too large: refused before a byte is read.
    const declared = await rawRequest('PUT', `/v1/sandboxes/${sbA}/files/up/deep/big.bin`, {
      key: keyA,
      headers: { 'content-length': MAX_UPLOAD + 1, 'content-type': 'application/octet-stream' },
    });
    expect(declared.status).toBe(413);
    expect(declared.body).toEqual({ error: { code: 'too_large', message: expect.stringContaining(`${MAX_UPLOAD} bytes`), details: { max: MAX_UPLOAD } } });
    expect(listTree(root)).toEqual(before);
    // Chunked, with no length given: cut off when it passes the limit; the partial file and the directories made for it go.
    const pieces = Array.from({ length: 40 }, () => Buffer.alloc(64 * 1024, 2)); // 2.5 MiB
    const chunked = await rawRequest('PUT', `/v1/sandboxes/${sbA}/files/up/deep/big.bin`, {
      key: keyA,
      headers: { 'transfer-encoding': 'chunked', 'content-type': 'application/octet-stream' },
      body: pieces,
    });
    expect(chunked.status).toBe(413);
    expect(chunked.body.error.code).toBe('too_large');
    expect(listTree(root)).toEqual(before);
    // A client that goes on sending long after the 413 still reads it; the server cuts it off after a bounded drain.
    const started = Date.now();
    const endless = await rawRequest('PUT', `/v1/sandboxes/${sbA}/files/up/endless.bin`, {
      key: keyA,
      headers: { 'transfer-encoding': 'chunked' },
      body: Array.from({ length: 96 }, () => Buffer.alloc(MiB, 4)),
    });
    expect(endless.status).toBe(413);
    expect(endless.body.error.code).toBe('too_large');
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(listTree(root)).toEqual(before);
    // An existing file is not replaced by a refused upload.
    expect((await A.call('PUT', `/v1/sandboxes/${sbA}/files/kept.txt`, 'old')).status).toBe(204);
    const over = await rawRequest('PUT', `/v1/sandboxes/${sbA}/files/kept.txt`, { key: keyA, headers: { 'transfer-encoding': 'chunked' }, body: pieces });
    expect(over.status).toBe(413);
    expect(fs.readFileSync(path.join(root, 'kept.txt'), 'utf8')).toBe('old');
    expect(listTree(root)).toEqual([...before, 'kept.txt'].sort());
    // Exactly at the limit is accepted.
    const exact = await rawRequest('PUT', `/v1/sandboxes/${sbA}/files/up/exact.bin`, { key: keyA, body: Buffer.alloc(MAX_UPLOAD, 3) });
    expect(exact.status).toBe(204);
    expect(fs.statSync(path.join(root, 'up/exact.bin')).size).toBe(MAX_UPLOAD);
    fs.rmSync(path.join(root, 'up'), { recursive: true });
    fs.rmSync(path.join(root, 'kept.txt'));
  });

  it('sandboxes per account: 422 limit_exceeded at the cap, for creates and forks, and concurrent creates cannot pass it', async () => {
    const acct = await stack.newAccount('capped');
    const C = apiClient(url, acct.apiKey);
    const dirsBefore = fs.readdirSync(path.join(stack.dir, 'sandboxes'));
    // Concurrent creates: exactly the cap succeeds.
    const results = await Promise.all(Array.from({ length: 8 }, () => C.call('POST', '/v1/sandboxes', {})));
    const created = results.filter((r) => r.status === 201);
    const refused = results.filter((r) => r.status !== 201);
    expect(created).toHaveLength(MAX_SANDBOXES);
    for (const r of refused) {
      expect(r.status).toBe(422);
      expect(r.body).toEqual({ error: { code: 'limit_exceeded', message: expect.stringContaining('sandboxes_per_account'), details: { limit: 'sandboxes_per_account', max: MAX_SANDBOXES } } });
    }
    const live = await stack.db.selectFrom('sandboxes').select(['id', 'state']).where('account_id', '=', acct.id).execute();
    expect(live.map((s) => s.state)).toEqual(['running', 'running', 'running']);
    // No directory was made for a refused create.
    const dirs = fs.readdirSync(path.join(stack.dir, 'sandboxes')).filter((d) => !dirsBefore.includes(d));
    expect(dirs.sort()).toEqual(live.map((s) => s.id).sort());

    // A fork at the cap is refused the same way and leaves no row.
    const source = created[0]!.body.id as string;
    const snap = await C.snapshot(source, 'for-fork');
    expect(snap.op.status).toBe('succeeded');
    const fork = await C.call('POST', '/v1/sandboxes', { from_snapshot: snap.snapshotId });
    expect(fork.status).toBe(422);
    expect(fork.body).toEqual({ error: { code: 'limit_exceeded', message: expect.any(String), details: { limit: 'sandboxes_per_account', max: MAX_SANDBOXES } } });
    expect(await count('sandboxes', ['account_id', acct.id])).toBe(MAX_SANDBOXES);

    // Deleting one frees its place, for a fork too.
    const del = await C.call('DELETE', `/v1/sandboxes/${created[1]!.body.id}`);
    expect((await C.waitOp(del.body.operation.id)).status).toBe('succeeded');
    const fork2 = await C.call('POST', '/v1/sandboxes', { from_snapshot: snap.snapshotId });
    expect(fork2.status).toBe(202);
    expect((await C.waitOp(fork2.body.operation.id)).status).toBe('succeeded');
    expect((await C.call('POST', '/v1/sandboxes', {})).status).toBe(422);
  });

  it('an import whose files expand past CAGED_MAX_SNAPSHOT_BYTES is 422 snapshot_bytes, however small the upload, and leaves nothing', async () => {
    const blobs = path.join(stack.dir, 'blobs');
    const blobsBefore = listTree(blobs, true);
    const snaps = await count('snapshots', ['sandbox_id', sbA]);
    // 64 MiB of zeros in one file: about 64 KiB on the wire, 16 times the limit once extracted.
    const archive = await gzipWithZeros(ustarHeader({ name: 'zeros.bin', type: '0', mode: 0o644, size: 64 * MiB }), 64 * MiB + 1024);
    expect(archive.length).toBeLessThan(MAX_SNAPSHOT / 4);
    const r = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots/import?name=bomb`, new Uint8Array(archive), { 'content-type': 'application/gzip' });
    expect(r.status).toBe(422);
    expect(r.body).toEqual({ error: { code: 'limit_exceeded', message: expect.stringContaining('zeros.bin'), details: { limit: 'snapshot_bytes', max: MAX_SNAPSHOT } } });
    // Several files that only together pass it.
    const three = gz(rawTar([1, 2, 3].map((i) => ({ name: `part${i}`, data: Buffer.alloc(1.5 * MiB, i) }))));
    const r3 = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots/import?name=parts`, new Uint8Array(three), { 'content-type': 'application/gzip' });
    expect(r3.status).toBe(422);
    expect(r3.body.error).toMatchObject({ code: 'limit_exceeded', details: { limit: 'snapshot_bytes', max: MAX_SNAPSHOT } });
    expect(r3.body.error.message).toContain('part3');
    expect(await count('snapshots', ['sandbox_id', sbA])).toBe(snaps);
    expect(listTree(blobs, true)).toEqual(blobsBefore);

    // Under the limit it is accepted, and its logical size is recorded next to the stored one.
    const fine = gz(rawTar([{ name: 'a.txt', data: Buffer.alloc(1000, 1) }, { name: 'd', type: '5' }, { name: 'd/b.bin', data: Buffer.alloc(2 * MiB, 2) }]));
    const ok = await A.call('POST', `/v1/sandboxes/${sbA}/snapshots/import?name=fine`, new Uint8Array(fine), { 'content-type': 'application/gzip' });
    expect(ok.status).toBe(202);
    expect((await A.waitOp(ok.body.operation.id)).status).toBe('succeeded');
    const row = await stack.db.selectFrom('snapshots').select(['tree_bytes', 'size_bytes', 'stored_bytes', 'state']).where('id', '=', ok.body.snapshot.id).executeTakeFirstOrThrow();
    expect(row.state).toBe('ready');
    expect(Number(row.tree_bytes)).toBe(1000 + 2 * MiB);
    // A chunked snapshot's size is its files' bytes; what it stores (zstd of repeated bytes) is far less.
    expect(Number(row.size_bytes)).toBe(Number(row.tree_bytes));
    expect(Number(row.stored_bytes)).toBeLessThan(Number(row.tree_bytes) / 10);
  });
});

describe('signed URLs stay out of the logs', () => {
  it('the request log shows downloads without their query string', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const server = await buildServer({ ...stack.ctx, log: pino({ level: 'debug' }, sink) });
    const base = await server.listen({ host: '127.0.0.1', port: 0 });
    try {
      const key = `exports/${sbA}/logged.tar.gz`;
      await stack.store.put(key, Readable.from([Buffer.from('archive bytes')]), { contentType: 'application/gzip' });
      const signed = signDownload(stack.config.urlSecret!, base, key, Math.floor(Date.now() / 1000) + 600);
      const sig = new URL(signed).searchParams.get('sig')!;
      const good = await fetch(signed);
      expect(good.status).toBe(200);
      expect(await good.text()).toBe('archive bytes');
      const bad = await fetch(signed.replace(/sig=[^&]+/, 'sig=forged-signature-value'));
      expect(bad.status).toBe(403);
      expect(await bad.json()).toEqual(errorBody('forbidden'));
      // The router's decoding is no way around the redaction.
      const encoded = await sendRaw(base, 'GET', signed.replace(`${base}/v1/`, '/%761/'));
      expect(encoded.status).toBe(200);
      await server.close();
      const log = lines.join('');
      expect(log).toContain('/v1/downloads/exports/');
      expect(log).toContain('?[redacted]');
      expect(log).not.toContain(sig);
      expect(log).not.toContain('forged-signature-value');
      expect(log).not.toMatch(/[?&](sig|expires)=/);
    } finally {
      await server.close().catch(() => {});
      await stack.store.delete(`exports/${sbA}/logged.tar.gz`).catch(() => {});
    }
  });

  it('presigned S3 URLs are redacted from logged URLs and errors', () => {
    const presigned =
      'https://bucket.s3.amazonaws.com/exports/x.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261201&X-Amz-Date=20261201T000000Z&X-Amz-Expires=3600&X-Amz-Signature=abcdef0123456789&X-Amz-SignedHeaders=host';
    const scrubbed = scrubSignedUrls(`export failed for ${presigned}`);
    expect(scrubbed).not.toContain('abcdef0123456789');
    expect(scrubbed).not.toContain('AKIDEXAMPLE');
    expect(scrubbed).toContain('https://bucket.s3.amazonaws.com/exports/x.tar.gz?X-Amz-Algorithm=[redacted]');
    const err = apiLogSerializers.err(new Error(`GET ${presigned} failed`));
    expect(JSON.stringify(err)).not.toContain('abcdef0123456789');
    expect(logUrl('/v1/downloads/exports/a.tar.gz?expires=1&sig=SECRET')).toBe('/v1/downloads/exports/a.tar.gz?[redacted]');
    expect(logUrl('/v1/operations?status=failed')).toBe('/v1/operations?status=failed');
  });
});

describe('the local runtime and the service environment', () => {
  it("sandbox processes do not see the service's environment", async () => {
    const planted = {
      CAGED_ADMIN_TOKEN: 'fake-admin-token-for-env-test',
      CAGED_URL_SECRET: 'fake-url-secret-for-env-test',
      AWS_SECRET_ACCESS_KEY: 'fake-aws-secret-for-env-test',
      AWS_ACCESS_KEY_ID: 'AKIAFAKEFORENVTEST',
      DATABASE_URL: 'postgres://fake:fake-db-password@db/x',
      TEMPORAL_ADDRESS: 'fake-temporal:7233',
    };
    const saved = Object.fromEntries(Object.keys(planted).map((k) => [k, process.env[k]]));
    Object.assign(process.env, planted);
    try {
      // A fresh sandbox: its agent (and so every process in it) starts while the secrets are set.
      const id = await A.createSandbox();
      const out = await A.exec(id, ['env']);
      expect(out.exit_code).toBe(0);
      const env = Object.fromEntries((out.stdout as string).trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      for (const value of Object.values(planted)) expect(out.stdout).not.toContain(value);
      for (const name of Object.keys(env)) expect(name, name).not.toMatch(/^(AWS_|TEMPORAL_|DATABASE_URL|NODE_OPTIONS)|^CAGED_(?!SANDBOX_ID$)/);
      expect(env).toMatchObject({ HOME: stack.runtime.rootDir(id), LANG: 'C.UTF-8', TERM: 'dumb', CAGED_SANDBOX_ID: id, PATH: expect.stringContaining('/usr/bin') });
      // The agent itself does not carry them either.
      const pid = Number(fs.readFileSync(path.join(stack.runtime.sandboxDir(id), 'agent.pid'), 'utf8').split('\n')[0]);
      const agentEnv = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
      for (const value of Object.values(planted)) expect(agentEnv).not.toContain(value);
      await A.call('DELETE', `/v1/sandboxes/${id}`).then((r) => A.waitOp(r.body.operation.id));
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it('exec is off outside caged dev unless turned on', () => {
    expect(loadConfig({}, 'prod').execEnabled).toBe(false);
    expect(loadConfig({ CAGED_EXEC_ENABLED: '1' }, 'prod').execEnabled).toBe(true);
    expect(loadConfig({}, 'dev').execEnabled).toBe(true);
    expect(loadConfig({ CAGED_EXEC_ENABLED: 'false' }, 'dev').execEnabled).toBe(false);
    // caged api and caged worker load their configuration in prod mode.
    for (const main of ['src/app/api-main.ts', 'src/app/worker-main.ts']) {
      expect(fs.readFileSync(main, 'utf8')).toContain("loadConfig(process.env, 'prod')");
    }
  });
});
