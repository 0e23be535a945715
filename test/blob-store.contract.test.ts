import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { S3Config } from '../src/config.js';
import { CagedError } from '../src/shared/errors.js';
import type { BlobStore } from '../src/storage/blob-store.js';
import { FsBlobStore } from '../src/storage/fs-blob-store.js';
import { S3BlobStore } from '../src/storage/s3-blob-store.js';
import { RetryingBlobStore } from '../src/storage/retrying-blob-store.js';
import { startFaultProxy, type FaultProxy } from './support/s3-fault-proxy.js';
import { MiB } from './support/wait.js';

const PART = 5 * MiB; // the S3 minimum, so "more than one part" stays cheap
const CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' };

interface Harness {
  store: BlobStore;
  /** Whether the store can list unfinished uploads (s3rver cannot: ListMultipartUploads is 501 there). */
  listsIncomplete: boolean;
  /** Leaves what a crashed put of `key` would: a multipart upload or a temp file; returns its id. */
  crashLeftover(key: string): Promise<string>;
  /** Resolves once an interrupted put of key has visibly left partial state behind. */
  waitInProgress(key: string): Promise<void>;
  dispose(): Promise<void>;
}

const sha256 = (buf: Uint8Array) => createHash('sha256').update(buf).digest('hex');

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Random bytes of a length nobody can know in advance: no ContentLength, no path, no .length. */
function unknownLength(total: number, onChunk?: (chunk: Buffer) => void): Readable {
  return Readable.from(
    (async function* () {
      for (let sent = 0; sent < total; ) {
        const chunk = randomBytes(Math.min(total - sent, 1 + Math.floor(Math.random() * 256 * 1024)));
        onChunk?.(chunk);
        sent += chunk.byteLength;
        yield chunk;
      }
    })(),
    { objectMode: false },
  );
}

/** Sends more than one part, waits until the store has partial state, then runs `then`. */
function interrupted(then: () => Promise<void>, keepGoing = false): Readable {
  return Readable.from(
    (async function* () {
      for (let sent = 0; sent <= PART; sent += 256 * 1024) yield randomBytes(256 * 1024);
      await then();
      while (keepGoing) {
        await sleep(5);
        yield randomBytes(64 * 1024);
      }
    })(),
    { objectMode: false },
  );
}

const rfc3986 = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();

/** What a SigV4 server computes for a presigned GET of this URL (AWS docs, "query string auth"). */
function sigV4Presigned(url: URL, secret: string): string {
  const [scopeDate = '', region = '', service = ''] = (url.searchParams.get('X-Amz-Credential') ?? '').split('/').slice(1);
  const query = [...url.searchParams]
    .filter(([k]) => k !== 'X-Amz-Signature')
    .map(([k, v]) => `${rfc3986(k)}=${rfc3986(v)}`)
    .sort()
    .join('&');
  const canonical = ['GET', url.pathname, query, `host:${url.host}`, '', 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const toSign = [
    'AWS4-HMAC-SHA256',
    url.searchParams.get('X-Amz-Date'),
    `${scopeDate}/${region}/${service}/aws4_request`,
    createHash('sha256').update(canonical).digest('hex'),
  ].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, scopeDate), region), service), 'aws4_request');
  return createHmac('sha256', key).update(toSign).digest('hex');
}

async function poll(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function keysOf(store: BlobStore, prefix: string): Promise<Array<[string, number]>> {
  const out: Array<[string, number]> = [];
  for await (const info of store.list(prefix)) out.push([info.key, info.size]);
  return out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

async function expectGone(store: BlobStore, key: string): Promise<void> {
  expect(await store.head(key)).toBeNull();
  expect(await store.abortIncomplete(key)).toBe(0);
}

function contract(name: string, makeStore: () => Promise<Harness>): void {
  describe(`BlobStore contract: ${name}`, () => {
    let h: Harness;
    let store: BlobStore;
    beforeAll(async () => {
      h = await makeStore();
      store = h.store;
    });
    afterAll(async () => h?.dispose());

    it('round-trips an empty object', async () => {
      expect(await store.put('rt/empty', Readable.from([], { objectMode: false }))).toEqual({ size: 0 });
      expect(await readAll(await store.get('rt/empty'))).toEqual(Buffer.alloc(0));
      expect(await store.head('rt/empty')).toEqual({ key: 'rt/empty', size: 0 });
    });

    it('round-trips 1 MiB byte for byte', async () => {
      const data = randomBytes(MiB);
      expect(await store.put('rt/one-mib', Readable.from([data], { objectMode: false }))).toEqual({ size: MiB });
      expect(sha256(await readAll(await store.get('rt/one-mib')))).toBe(sha256(data));
      expect(await store.head('rt/one-mib')).toEqual({ key: 'rt/one-mib', size: MiB });
    });

    it('round-trips a stream of unknown length spanning several parts (aws-sdk-js-v3 #7382)', async () => {
      const total = 12 * MiB + 12345;
      const sent = createHash('sha256');
      const body = unknownLength(total, (c) => sent.update(c));
      expect(await store.put('rt/unknown', body, { contentType: 'application/octet-stream' })).toEqual({ size: total });
      const got = createHash('sha256');
      for await (const chunk of await store.get('rt/unknown')) got.update(chunk as Buffer);
      expect(got.digest('hex')).toBe(sent.digest('hex'));
      expect(await store.head('rt/unknown')).toEqual({ key: 'rt/unknown', size: total });
    });

    it('uploads an fs.ReadStream whose stat size is wrong (/dev/urandom reports 0)', async () => {
      const total = PART + MiB;
      const body = createReadStream('/dev/urandom', { end: total - 1 });
      expect(await store.put('rt/urandom', body)).toEqual({ size: total });
      expect(await store.head('rt/urandom')).toEqual({ key: 'rt/urandom', size: total });
      expect((await readAll(await store.get('rt/urandom'))).byteLength).toBe(total);
    });

    it('reads from an offset (a resumed download)', async () => {
      const data = randomBytes(PART + 1000);
      await store.put('rt/offset', Readable.from([data]));
      expect(sha256(await readAll(await store.get('rt/offset', { offset: PART })))).toBe(sha256(data.subarray(PART)));
    });

    it('reports a missing key as null from head and not_found from get', async () => {
      expect(await store.head('missing/key')).toBeNull();
      const err = await store.get('missing/key').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CagedError);
      expect((err as CagedError).code).toBe('not_found');
    });

    it('deletes, and deleting again succeeds', async () => {
      await store.put('del/x', Readable.from([Buffer.from('x')]));
      await store.delete('del/x');
      expect(await store.head('del/x')).toBeNull();
      await expect(store.get('del/x')).rejects.toMatchObject({ code: 'not_found' });
      await expect(store.delete('del/x')).resolves.toBeUndefined();
      await expect(store.delete('del/never-existed')).resolves.toBeUndefined();
    });

    it('lists exactly the keys under a prefix', async () => {
      for (const [key, len] of [['ls/a/1', 1], ['ls/a/2', 2], ['ls/a-b', 3], ['ls/b/c/d', 4], ['lsx', 5]] as const) {
        await store.put(key, Readable.from([randomBytes(len)]));
      }
      expect(await keysOf(store, 'ls/')).toEqual([['ls/a-b', 3], ['ls/a/1', 1], ['ls/a/2', 2], ['ls/b/c/d', 4]]);
      expect(await keysOf(store, 'ls/a')).toEqual([['ls/a-b', 3], ['ls/a/1', 1], ['ls/a/2', 2]]);
      expect(await keysOf(store, 'ls/a/')).toEqual([['ls/a/1', 1], ['ls/a/2', 2]]);
      expect(await keysOf(store, 'ls/b/c/d')).toEqual([['ls/b/c/d', 4]]);
      expect(await keysOf(store, 'ls/nothing/')).toEqual([]);
    });

    it('rejects invalid keys', async () => {
      for (const key of ['', '/abs', 'a/../b', 'a//b', 'a\\b', 'a/./b']) {
        await expect(store.head(key)).rejects.toThrow(/invalid blob key/);
      }
    });

    it('leaves nothing behind when the body errors after more than one part', async () => {
      const key = 'fail/body-error';
      const body = interrupted(async () => {
        await h.waitInProgress(key);
        throw new Error('disk on fire');
      });
      await expect(store.put(key, body)).rejects.toThrow('disk on fire');
      await expectGone(store, key);
    });

    it('leaves nothing behind when aborted midway, even while the body keeps flowing', async () => {
      const key = 'fail/aborted';
      const ctl = new AbortController();
      const body = interrupted(async () => {
        await h.waitInProgress(key);
        ctl.abort();
      }, true);
      await expect(store.put(key, body, { signal: ctl.signal })).rejects.toMatchObject({ name: 'AbortError' });
      expect(body.destroyed).toBe(true);
      await expectGone(store, key);
    });

    it('rejects an already aborted put without reading the body', async () => {
      const body = unknownLength(MiB);
      await expect(store.put('fail/pre-aborted', body, { signal: AbortSignal.abort() })).rejects.toMatchObject({
        name: 'AbortError',
      });
      expect(body.destroyed).toBe(true);
      await expectGone(store, 'fail/pre-aborted');
    });

    it('keeps the previous object when an overwrite fails', async () => {
      const key = 'fail/overwrite';
      const v1 = randomBytes(1000);
      await store.put(key, Readable.from([v1]));
      const body = interrupted(async () => {
        await h.waitInProgress(key);
        throw new Error('boom');
      });
      await expect(store.put(key, body)).rejects.toThrow('boom');
      expect(sha256(await readAll(await store.get(key)))).toBe(sha256(v1));
      expect(await store.abortIncomplete(key)).toBe(0);
    });

    it('lists what a crashed put left under a prefix where it can, and abortIncomplete removes it', async () => {
      const id = await h.crashLeftover('inc/x/crashed');
      await h.crashLeftover('other/crashed');
      const listed = [];
      for await (const up of store.listIncomplete!('inc/')) listed.push(up);
      if (h.listsIncomplete) {
        expect(listed.map((u) => [u.key, u.uploadId])).toEqual([['inc/x/crashed', id]]);
        expect(listed[0]!.initiated).toBeInstanceOf(Date);
        expect(await store.abortIncomplete('inc/x/crashed')).toBe(1);
        const after = [];
        for await (const up of store.listIncomplete!('inc/')) after.push(up);
        expect(after).toEqual([]);
      } else {
        expect(listed).toEqual([]);
        expect(await store.abortIncomplete('inc/x/crashed')).toBe(0);
      }
      expect(await keysOf(store, 'inc/')).toEqual([]);
    });

    it('tells the id of a multipart upload as it starts, and only for multi-part objects', async () => {
      const ids: string[] = [];
      await store.put('ids/small', Readable.from([randomBytes(1000)]), { onUploadStarted: (id) => ids.push(id) });
      expect(ids).toEqual([]);
      await store.put('ids/large', unknownLength(PART + 1), { onUploadStarted: (id) => ids.push(id) });
      expect(ids).toHaveLength(store.kind === 's3' ? 1 : 0);
      expect(await store.head('ids/large')).toEqual({ key: 'ids/large', size: PART + 1 });
    });
  });
}

/** What the app uses: any store behind RetryingBlobStore keeps the contract. */
const retrying = (store: BlobStore) => new RetryingBlobStore(store, { totalMs: 5000, baseMs: 50, maxDelayMs: 500 });

for (const wrapped of [false, true]) contract(wrapped ? 'fs behind RetryingBlobStore' : 'fs', async () => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'caged-blobs-'));
  return {
    store: wrapped ? retrying(new FsBlobStore(root)) : new FsBlobStore(root),
    listsIncomplete: true,
    crashLeftover: async (key) => {
      await fs.mkdir(path.join(root, path.dirname(key)), { recursive: true });
      await fs.writeFile(path.join(root, `${key}.partial-deadbeef`), 'half');
      return 'deadbeef';
    },
    waitInProgress: (key) =>
      poll(`a partial file for ${key}`, async () => {
        const dir = path.join(root, path.dirname(key));
        const names = await fs.readdir(dir).catch(() => []);
        return names.some((n) => n.startsWith(`${path.basename(key)}.partial-`));
      }),
    dispose: () => fs.rm(root, { recursive: true, force: true }),
  };
});

const SERVERS = [
  { name: 'moto', endpoint: () => inject('s3Endpoint'), listsUploads: true },
  { name: 's3rver', endpoint: () => inject('s3rverEndpoint'), listsUploads: false },
] as const;

function s3Setup(endpoint: string) {
  const cfg: S3Config = {
    bucket: inject('s3Bucket'),
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    prefix: `contract-${Date.now()}-${process.pid}-${randomBytes(3).toString('hex')}/`,
    partSizeBytes: PART,
    queueSize: 2,
  };
  const raw = new S3Client({
    endpoint: cfg.endpoint,
    region: cfg.region,
    forcePathStyle: true,
    credentials: CREDENTIALS,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const uploadsOf = async (key: string) => {
    const out = await raw.send(new ListMultipartUploadsCommand({ Bucket: cfg.bucket, Prefix: cfg.prefix + key }));
    return (out.Uploads ?? []).filter((u) => u.Key === cfg.prefix + key);
  };
  return { cfg, raw, uploadsOf };
}

for (const server of SERVERS) for (const wrapped of [false, true]) {
  contract(`s3 (${server.name})${wrapped ? ' behind RetryingBlobStore' : ''}`, async () => {
    // Through the fault proxy with no rule armed: it only watches, so the harness can see a part land on any server.
    const proxy = await startFaultProxy(server.endpoint());
    const { cfg, raw } = s3Setup(proxy.endpoint);
    const s3 = new S3BlobStore(cfg, { credentials: CREDENTIALS });
    const store = wrapped ? retrying(s3) : s3;
    return {
      store,
      listsIncomplete: server.listsUploads,
      crashLeftover: async (key) => (await raw.send(new CreateMultipartUploadCommand({ Bucket: cfg.bucket, Key: cfg.prefix + key }))).UploadId!,
      // A multipart upload with at least one stored part: the costly kind of leftover.
      waitInProgress: (key) =>
        poll(`an uploaded part for ${key}`, async () => proxy.seen.some((r) => r.op === 'UploadPart' && r.key === cfg.prefix + key && r.status === 200)),
      dispose: async () => {
        await store.close();
        raw.destroy();
        await proxy.close();
      },
    };
  });
}

describe('S3BlobStore specifics', () => {
  let s3: ReturnType<typeof s3Setup>;
  let store: S3BlobStore;
  beforeAll(() => {
    s3 = s3Setup(inject('s3Endpoint'));
    store = new S3BlobStore(s3.cfg, { credentials: CREDENTIALS });
  });
  afterAll(async () => {
    await store?.close();
    s3?.raw.destroy();
  });

  it('aborts a multipart upload a crashed worker left, and only for that exact key', async () => {
    const { cfg, raw, uploadsOf } = s3;
    await raw.send(new CreateMultipartUploadCommand({ Bucket: cfg.bucket, Key: `${cfg.prefix}crash/a` }));
    await raw.send(new CreateMultipartUploadCommand({ Bucket: cfg.bucket, Key: `${cfg.prefix}crash/ab` }));
    expect(await uploadsOf('crash/a')).toHaveLength(1);
    expect(await store.abortIncomplete('crash/a')).toBe(1);
    expect(await uploadsOf('crash/a')).toEqual([]);
    expect(await uploadsOf('crash/ab')).toHaveLength(1);
    expect(await store.abortIncomplete('crash/a')).toBe(0);
    expect(await store.abortIncomplete('crash/ab')).toBe(1);
  });

  it('presigns a GET that plain fetch can download, as an attachment', async () => {
    const data = randomBytes(MiB);
    await store.put('presign/blob', Readable.from([data]));
    const url = await store.presignGet('presign/blob', 60, 'snap shot.tar.gz');
    expect(new URL(url).origin).toBe(s3.cfg.endpoint);
    expect(new URL(url).searchParams.get('X-Amz-Expires')).toBe('60');
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toBe('attachment; filename="snap shot.tar.gz"');
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(sha256(data));
  });

  // moto 5.2.5 serves presigned GETs without checking the signature (an altered one still gets
  // 200), so the signature is checked here against an independent SigV4 computation instead.
  it('signs only the host header, verifiably, so an altered signature does not verify', async () => {
    const url = new URL(await store.presignGet('presign/blob', 60, 'x'));
    expect(url.searchParams.get('X-Amz-SignedHeaders')).toBe('host');
    expect(url.searchParams.get('response-content-disposition')).toBe('attachment; filename="x"');
    expect(url.searchParams.get('X-Amz-Signature')).toBe(sigV4Presigned(url, CREDENTIALS.secretAccessKey));
    const sig = url.searchParams.get('X-Amz-Signature') ?? '';
    url.searchParams.set('X-Amz-Signature', `${sig.startsWith('0') ? '1' : '0'}${sig.slice(1)}`);
    expect(url.searchParams.get('X-Amz-Signature')).not.toBe(sigV4Presigned(url, CREDENTIALS.secretAccessKey));
  });

  it('signs for the public endpoint when one is configured', async () => {
    const other = new S3BlobStore({ ...s3.cfg, publicEndpoint: 'https://s3.example.test' }, { credentials: CREDENTIALS });
    try {
      const url = new URL(await other.presignGet('presign/blob', 60, 'x'));
      expect(url.origin).toBe('https://s3.example.test');
      expect(url.pathname).toBe(`/${s3.cfg.bucket}/${s3.cfg.prefix}presign/blob`);
    } finally {
      await other.close();
    }
  });

  it('stops reading the body when S3 refuses the upload', async () => {
    const broken = new S3BlobStore({ ...s3.cfg, bucket: 'no-such-bucket' }, { credentials: CREDENTIALS });
    try {
      const body = interrupted(async () => {}, true);
      await expect(broken.put('refused', body)).rejects.toMatchObject({ name: 'NoSuchBucket' });
      expect(body.destroyed).toBe(true);
    } finally {
      await broken.close();
    }
  });

  it('refuses expiries S3 cannot sign', async () => {
    for (const bad of [0, -1, 1.5, 604_801]) {
      await expect(store.presignGet('presign/blob', bad, 'x')).rejects.toMatchObject({ code: 'invalid_input' });
    }
    await expect(store.presignGet('presign/blob', 604_800, 'x')).resolves.toMatch(/X-Amz-Expires=604800/);
  });
});

describe('FsBlobStore specifics', () => {
  let root: string;
  let store: FsBlobStore;
  beforeAll(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'caged-blobs-'));
    store = new FsBlobStore(root);
  });
  afterAll(() => fs.rm(root, { recursive: true, force: true }));

  it('removes a temp file a crashed put left, and only for that exact key', async () => {
    await fs.mkdir(path.join(root, 'crash'), { recursive: true });
    await fs.writeFile(path.join(root, 'crash', 'a.partial-x'), 'half');
    await fs.writeFile(path.join(root, 'crash', 'ab.partial-y'), 'half');
    expect(await keysOf(store, 'crash/')).toEqual([]);
    expect(await store.abortIncomplete('crash/a')).toBe(1);
    expect(await fs.readdir(path.join(root, 'crash'))).toEqual(['ab.partial-y']);
    expect(await store.abortIncomplete('crash/a')).toBe(0);
  });

  it('has no presigned URLs', () => {
    expect((store as BlobStore).presignGet).toBeUndefined();
  });

  it('refuses list prefixes that would leave the root', async () => {
    await expect(keysOf(store, '../')).rejects.toThrow(/invalid blob key/);
  });
});
