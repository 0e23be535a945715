import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openUploadKeys } from './support/s3.js';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { describeTree, gnuExtract, populateTree } from './support/tree.js';
import { fileBytes } from './support/snapshot-tree.js';
import { gz, gzipWithZeros, paxRecord, rawTar, ustarHeader } from './support/tar-builder.js';
import { faultRegistry } from './support/faults.js';
import { MiB, sleep } from './support/wait.js';
import { getSnapshot, newSnapshotObjectKey } from '../src/catalog/snapshots.js';
import { classifyKey } from '../src/storage/layout.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The import limits of the stacks below, small enough for bombs to be cheap. */
const LIMITS = { importMaxEntries: 50, importMaxPathLength: 200, importMaxUncompressedBytes: 32 * MiB };

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function download(url: string): Promise<{ status: number; body: Buffer; headers: Headers }> {
  // No API key: the URL itself is the credential.
  const res = await fetch(url);
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), headers: res.headers };
}

describe.each(['fs', 's3'] as const)('export and import on the %s store', (storeKind) => {
  const faults = faultRegistry();
  let stack: TestStack;
  let api: ReturnType<typeof apiClient>;

  beforeAll(async () => {
    stack = await startStack({
      store: storeKind,
      catalog: 'postgres',
      api: true,
      limits: LIMITS,
      faultHook: faults.hook,
    });
    const acct = await stack.newAccount(`transfer-${storeKind}`);
    api = apiClient(stack.apiUrl!, acct.apiKey);
  });
  afterAll(async () => {
    await stack?.close();
  });

  const root = (id: string) => stack.runtime.rootDir(id);

  async function exportSnapshot(snapshotId: string, client = api) {
    const r = await client.call('POST', `/v1/snapshots/${snapshotId}/export`);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.operation).toMatchObject({ type: 'export', status: 'running', snapshot_id: snapshotId });
    const op = await client.waitOp(r.body.operation.id);
    expect(op.status, JSON.stringify(op.error)).toBe('succeeded');
    return op.result as { url: string; expires_at: string; sha256: string; size_bytes: number; reused: boolean };
  }

  describe('export', () => {
    it('gives a .tar.gz that GNU tar extracts to the snapshot tree exactly, and a second export reuses it', async () => {
      const id = await api.createSandbox();
      populateTree(root(id));
      const { snapshotId } = await api.snapshot(id, 'to-export');
      const expected = describeTree(root(id));
      // Later changes are not in the snapshot, so they must not be in the export either.
      fs.writeFileSync(path.join(root(id), 'after-snapshot'), 'later');

      const startedAt = Date.now();
      const first = await exportSnapshot(snapshotId);
      expect(first.reused).toBe(false);
      expect(first.sha256).toMatch(/^[0-9a-f]{64}$/);
      const expiresIn = (Date.parse(first.expires_at) - startedAt) / 1000;
      expect(expiresIn).toBeGreaterThan(3600 - 30);
      expect(expiresIn).toBeLessThanOrEqual(3600 + 1);
      if (storeKind === 'fs') expect(first.url.startsWith(`${stack.apiUrl}/v1/downloads/`)).toBe(true);
      else expect(first.url).toContain('X-Amz-Signature=');

      const got = await download(first.url);
      expect(got.status).toBe(200);
      expect(got.body.length).toBe(first.size_bytes);
      expect(sha256(got.body)).toBe(first.sha256);
      expect([...got.body.subarray(0, 2)]).toEqual([0x1f, 0x8b]);

      const file = path.join(stack.dir, `${snapshotId}.tar.gz`);
      fs.writeFileSync(file, got.body);
      const out = path.join(stack.dir, `export-${snapshotId}`);
      gnuExtract(file, out, 'gzip');
      expect(describeTree(out)).toEqual(expected);
      expect(expected).toContainEqual({ path: 'empty-dir', type: 'dir', mode: 0o755 });
      expect(expected.find((e) => e.path === 'proj/secret.txt')?.mode).toBe(0o600);

      const second = await exportSnapshot(snapshotId);
      expect(second).toMatchObject({ reused: true, sha256: first.sha256, size_bytes: first.size_bytes });
      const again = await download(second.url);
      expect(again.status).toBe(200);
      expect(sha256(again.body)).toBe(first.sha256);
    });

    it('refuses a delete while an export reads the snapshot (409 snapshot_in_use), and allows it after', async () => {
      const id = await api.createSandbox();
      fs.writeFileSync(path.join(root(id), 'data.bin'), randomBytes(2 * MiB));
      const { snapshotId } = await api.snapshot(id, 'busy');
      // The export blocks at its first progress report until opened.
      const exporting = faults.hold(snapshotId, 'export:progress');
      try {
        const r = await api.call('POST', `/v1/snapshots/${snapshotId}/export`);
        expect(r.status).toBe(202);
        await exporting.wasReached;

        const del = await api.call('DELETE', `/v1/snapshots/${snapshotId}`);
        expect(del.status).toBe(409);
        expect(del.body.error.code).toBe('snapshot_in_use');
        expect(del.body.error.message).toContain(r.body.operation.id);
        expect((await api.call('GET', `/v1/snapshots/${snapshotId}`)).body.state).toBe('ready');

        exporting.open();
        const op = await api.waitOp(r.body.operation.id);
        expect(op.status, JSON.stringify(op.error)).toBe('succeeded');
      } finally {
        exporting.open();
        faults.disarm(snapshotId);
      }
      const del = await api.call('DELETE', `/v1/snapshots/${snapshotId}`);
      expect(del.status).toBe(202);
      expect((await api.waitOp(del.body.operation.id)).status).toBe('succeeded');
      expect((await api.call('GET', `/v1/snapshots/${snapshotId}`)).status).toBe(404);
    });

    if (storeKind === 'fs') {
      it('refuses an altered signed URL with 403 forbidden', async () => {
        const id = await api.createSandbox();
        const other = await api.createSandbox();
        fs.writeFileSync(path.join(root(id), 'f'), 'x');
        const { snapshotId } = await api.snapshot(id, 'signed');
        const { snapshotId: otherSnap } = await api.snapshot(other, 'other');
        const { url } = await exportSnapshot(snapshotId);
        expect((await download(url)).status).toBe(200);

        const u = new URL(url);
        const sig = u.searchParams.get('sig')!;
        const forbidden = async (bad: URL) => {
          const r = await download(bad.toString());
          expect(r.status).toBe(403);
          expect(JSON.parse(r.body.toString()).error.code).toBe('forbidden');
        };
        const flipped = new URL(url);
        flipped.searchParams.set('sig', (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1));
        await forbidden(flipped);
        const noSig = new URL(url);
        noSig.searchParams.delete('sig');
        await forbidden(noSig);
        const later = new URL(url);
        later.searchParams.set('expires', String(Number(u.searchParams.get('expires')) + 3600));
        await forbidden(later);
        // The signature covers the key: it does not open another snapshot's archive.
        await exportSnapshot(otherSnap);
        const elsewhere = new URL(url);
        elsewhere.pathname = elsewhere.pathname.replace(snapshotId, otherSnap);
        await forbidden(elsewhere);
      });
    }
  });

  describe('download URL expiry', () => {
    let short: TestStack;
    let shortApi: ReturnType<typeof apiClient>;
    beforeAll(async () => {
      short = await startStack({ store: storeKind, catalog: 'postgres', api: true, limits: { urlExpirySeconds: 1 } });
      const acct = await short.newAccount('short-urls');
      shortApi = apiClient(short.apiUrl!, acct.apiKey);
    });
    afterAll(async () => short?.close());

    it('an expired URL is refused with 403', async () => {
      const id = await shortApi.createSandbox();
      fs.writeFileSync(path.join(short.runtime.rootDir(id), 'f'), 'x');
      const { snapshotId } = await shortApi.snapshot(id, 'expiring');
      const { url, expires_at } = await exportSnapshot(snapshotId, shortApi);
      expect(Date.parse(expires_at) - Date.now()).toBeLessThanOrEqual(1000);
      await sleep(2200);
      const r = await download(url);
      if (storeKind === 'fs') {
        expect(r.status).toBe(403);
        expect(JSON.parse(r.body.toString()).error.code).toBe('url_expired');
      } else {
        // moto serves presigned URLs after their expiry (it answers 200 here), so what can be checked
        // is that the URL carries the configured lifetime, counted from its signing time; real S3
        // refuses it with 403 once that has passed.
        const q = new URL(url).searchParams;
        expect(q.get('X-Amz-Expires')).toBe('1');
        const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(q.get('X-Amz-Date') ?? '');
        expect(m).not.toBeNull();
        const signedAt = Date.UTC(+m![1]!, +m![2]! - 1, +m![3]!, +m![4]!, +m![5]!, +m![6]!);
        expect(Math.abs(signedAt + 1000 - Date.parse(expires_at))).toBeLessThanOrEqual(1000);
      }
    });
  });

  describe('import', () => {
    async function postImport(sandboxId: string, name: string, archive: Buffer) {
      return api.call('POST', `/v1/sandboxes/${sandboxId}/snapshots/import?name=${name}`, new Uint8Array(archive), { 'content-type': 'application/gzip' });
    }

    /** Nothing of an upload may remain: objects, partial files, multipart uploads. */
    async function storedImports(): Promise<string[]> {
      const isImport = (key: string) => classifyKey(key)?.family === 'import';
      const keys = (await collect(stack.store.list(''))).map((b) => b.key).filter(isImport);
      if (storeKind === 'fs') {
        for await (const up of stack.store.listIncomplete!('')) if (isImport(up.key)) keys.push(`partial:${up.key}`);
      } else {
        keys.push(...(await openUploadKeys(stack)).filter(isImport).map((k) => `multipart:${k}`));
      }
      return keys;
    }

    it('turns a GNU tar -czf archive into a ready snapshot that restores to the same tree, hardlinks and absolute symlinks kept', async () => {
      const src = fs.mkdtempSync(path.join(stack.dir, 'import-src-'));
      populateTree(src);
      // An export of a sandbox holding hardlinks must import again (GNU tar writes them as links).
      fs.linkSync(path.join(src, 'proj/src/deep/er/blob.bin'), path.join(src, 'proj/blob-twin.bin'));
      // ...and so must one holding a virtualenv, whose interpreter is a link to the system's.
      fs.mkdirSync(path.join(src, 'venv/bin'), { recursive: true });
      fs.symlinkSync('/usr/bin/python3', path.join(src, 'venv/bin/python3'));
      const file = `${src}.tar.gz`;
      execFileSync('tar', ['-czf', file, '-C', src, '.']);
      const id = await api.createSandbox();
      fs.writeFileSync(path.join(root(id), 'before-import'), 'replaced by the restore');

      const r = await postImport(id, 'imported', fs.readFileSync(file));
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      expect(r.body.snapshot).toMatchObject({ sandbox_id: id, name: 'imported', kind: 'manual', state: 'pending' });
      expect(r.body.operation).toMatchObject({ type: 'import', status: 'running', snapshot_id: r.body.snapshot.id });
      const snapshotId = r.body.snapshot.id as string;
      const op = await api.waitOp(r.body.operation.id);
      expect(op.status, JSON.stringify(op.error)).toBe('succeeded');

      const snap = (await api.call('GET', `/v1/snapshots/${snapshotId}`)).body;
      expect(snap.state).toBe('ready');
      expect(op.result).toEqual({ snapshot_id: snapshotId, size_bytes: snap.size_bytes, sha256: snap.sha256 });
      const row = await getSnapshot(stack.db, snapshotId);
      expect(row!.object_key).toBe(newSnapshotObjectKey(id, snapshotId));
      // A chunked snapshot: its object is the manifest; its size is what its files hold.
      expect(row!.format).toBe('chunks');
      expect(await stack.store.head(row!.object_key)).toEqual({ key: row!.object_key, size: Number(row!.manifest_bytes) });
      expect(snap.size_bytes).toBe(fileBytes(src));
      // The uploaded copy is gone once converted.
      expect(await storedImports()).toEqual([]);

      const restore = await api.call('POST', `/v1/snapshots/${snapshotId}/restore`, {});
      expect(restore.status).toBe(202);
      const rop = await api.waitOp(restore.body.operation.id);
      expect(rop.status, JSON.stringify(rop.error)).toBe('succeeded');
      expect(describeTree(root(id))).toEqual(describeTree(src));
      const twin = fs.statSync(path.join(root(id), 'proj/blob-twin.bin'));
      expect(twin.nlink).toBe(2);
      expect(twin.ino).toBe(fs.statSync(path.join(root(id), 'proj/src/deep/er/blob.bin')).ino);
    });

    describe('refuses hostile archives and stores nothing', () => {
      let id: string;
      beforeAll(async () => {
        id = await api.createSandbox();
      });

      const bigFile = () => ({ name: 'big.bin', data: randomBytes(12 * MiB) });
      const corpus: Array<[string, () => Buffer | Promise<Buffer>, number, string, string[]]> = [
        ['an absolute path', () => gz(rawTar([{ name: 'ok.txt', data: Buffer.from('ok') }, { name: '/etc/passwd', data: Buffer.from('pwned') }])), 400, 'invalid_archive', ['absolute path', '/etc/passwd']],
        ['a .. path', () => gz(rawTar([{ name: 'a/../../evil', data: Buffer.from('pwned') }])), 400, 'invalid_archive', ["'..'", 'a/../../evil']],
        ['a symlink that escapes', () => gz(rawTar([{ name: 'esc', type: '2', linkname: '../../etc' }])), 400, 'invalid_archive', ['outside the archive', 'esc', '../../etc']],
        [
          'PAX records GNU tar reads differently (a device node and a setuid file hidden from node-tar)',
          () =>
            gz(
              rawTar([
                { name: 'a', data: Buffer.from('hello') },
                { name: 'f', size: 1024, pax: { size: '0', comment: `z\n${paxRecord('size', '1024').slice(0, -1)}` } },
                { name: 'null2', type: '3', mode: 0o666 },
                { name: 'suid', mode: 0o4755 },
              ]),
            ),
          400,
          'invalid_archive',
          ['ambiguous tar headers', 'PAX record comment holds a newline'],
        ],
        ['a hardlink to a file the archive does not hold', () => gz(rawTar([{ name: 'twin', type: '1', linkname: 'etc/passwd' }])), 400, 'invalid_archive', ['not a regular file earlier in the archive', 'twin']],
        ['a character device', () => gz(rawTar([{ name: 'dev/null', type: '3' }])), 400, 'invalid_archive', ['CharacterDevice', 'dev/null']],
        ['a FIFO', () => gz(rawTar([{ name: 'pipe', type: '6' }])), 400, 'invalid_archive', ['FIFO', 'pipe']],
        [
          'corrupt gzip',
          () => {
            // Stored blocks keep the flip inside file content, so only the gzip CRC can notice.
            const a = Buffer.from(gz(rawTar([{ name: 'payload', data: randomBytes(30_000) }]), 0));
            for (let i = 10_000; i < 10_008; i++) a[i] = a[i]! ^ 0xff;
            return a;
          },
          400,
          'invalid_archive',
          ['corrupt gzip data'],
        ],
        ['an entry-count bomb', () => gz(rawTar(Array.from({ length: 51 }, (_, i) => ({ name: `f${String(i).padStart(3, '0')}` })))), 422, 'limit_exceeded', ['too many entries', 'more than 50', 'f050']],
        ['a path-length bomb', () => gz(rawTar([{ name: 'short', pax: { path: `${'p'.repeat(100)}/${'q'.repeat(4900)}` } }])), 422, 'limit_exceeded', ['path longer than 200 bytes']],
        [
          'a size bomb by declared size',
          () => gzipWithZeros(ustarHeader({ name: 'bomb', type: '0', mode: 0o644, size: 64 * MiB }), 64 * MiB + 1024),
          422,
          'limit_exceeded',
          ['declared sizes exceed 33554432 bytes', 'bomb'],
        ],
        ['a size bomb by inflation', () => gzipWithZeros(rawTar([{ name: 'small', data: Buffer.from('ok') }]), 128 * MiB), 422, 'limit_exceeded', ['expands beyond', 'zeros follow the end-of-archive marker']],
        // Refused only at the end of the stream, when the store has already seen every byte.
        ['a symlink that escapes through another symlink', () => gz(rawTar([{ name: 'd', type: '2', linkname: '.' }, { name: 'e', type: '2', linkname: 'd/..' }])), 400, 'invalid_archive', ['through other symlinks', '"e"']],
        ['a tar stream without its end marker', () => gz(rawTar([{ name: 'f', data: Buffer.from('x') }], { eof: false })), 400, 'invalid_archive', ['truncated archive']],
        // Larger than one multipart part: the refusal comes after real bytes went to the store.
        ['a large upload with a bad entry at its end', () => gz(rawTar([bigFile(), { name: '/abs', data: Buffer.from('x') }]), 1), 400, 'invalid_archive', ['absolute path', '/abs']],
      ];

      it.each(corpus)('%s', async (_label, build, status, code, fragments) => {
        const archive = await build();
        const r = await postImport(id, 'hostile', archive);
        expect(r.status, JSON.stringify(r.body)).toBe(status);
        expect(r.body.error.code).toBe(code);
        for (const f of fragments) expect(r.body.error.message).toContain(f);

        // A late write of the refused upload would show up here.
        await sleep(300);
        expect(await api.call('GET', `/v1/sandboxes/${id}/snapshots`)).toMatchObject({ status: 200, body: { snapshots: [] } });
        expect(await stack.db.selectFrom('snapshots').select('id').where('sandbox_id', '=', id).execute()).toEqual([]);
        expect(await storedImports()).toEqual([]);
        expect(await collect(stack.store.list(`snapshots/${id}/`))).toEqual([]);
        expect(
          await stack.db.selectFrom('operations').select('id').where('sandbox_id', '=', id).where('type', '=', 'import').execute(),
        ).toEqual([]);
      });

      it('still accepts a good archive under the same name afterwards', async () => {
        const r = await postImport(id, 'hostile', gz(rawTar([{ name: 'fine.txt', data: Buffer.from('fine') }])));
        expect(r.status, JSON.stringify(r.body)).toBe(202);
        expect((await api.waitOp(r.body.operation.id)).status).toBe('succeeded');
        expect((await api.call('GET', `/v1/sandboxes/${id}/snapshots`)).body.snapshots.map((s: { name: string }) => s.name)).toEqual(['hostile']);
      });
    });
  });
});
