import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/common';
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import { CagedError } from '../src/shared/errors.js';
import { toFailure } from '../src/activities/failures.js';
import { classifyStorageError } from '../src/storage/errors.js';
import { RetryingBlobStore, withRetry } from '../src/storage/retrying-blob-store.js';
import { S3BlobStore } from '../src/storage/s3-blob-store.js';
import type { RetryInfo } from '../src/storage/blob-store.js';
import { startFaultProxy, type FaultProxy } from './support/s3-fault-proxy.js';
import { MiB } from './support/wait.js';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** An error shaped like the SDK's S3ServiceException. */
function sdkError(name: string, status: number, extra: Record<string, unknown> = {}) {
  return Object.assign(new Error(`${name} message`), { name, $fault: status >= 500 ? 'server' : 'client', $metadata: { httpStatusCode: status }, ...extra });
}
const errno = (code: string, message = code) => Object.assign(new Error(message), { code });

describe('classifyStorageError', () => {
  it.each([
    ['AccessDenied 403', sdkError('AccessDenied', 403), 'permanent'],
    ['NoSuchBucket 404', sdkError('NoSuchBucket', 404), 'permanent'],
    ['InvalidAccessKeyId 403', sdkError('InvalidAccessKeyId', 403), 'permanent'],
    ['SignatureDoesNotMatch 403', sdkError('SignatureDoesNotMatch', 403), 'permanent'],
    ['NotImplemented 501', sdkError('NotImplemented', 501), 'permanent'],
    ['a bare 400', sdkError('BadRequest', 400), 'permanent'],
    ['EntityTooSmall 400', sdkError('EntityTooSmall', 400), 'permanent'],
    ['SlowDown 503', sdkError('SlowDown', 503), 'transient'],
    ['ServiceUnavailable 503', sdkError('ServiceUnavailable', 503), 'transient'],
    ['InternalError 500', sdkError('InternalError', 500), 'transient'],
    ['a bare 502', sdkError('Unknown', 502), 'transient'],
    ['429', sdkError('TooManyRequests', 429), 'transient'],
    ['RequestTimeout 400', sdkError('RequestTimeout', 400), 'transient'],
    ['Throttling 400', sdkError('Throttling', 400), 'transient'],
    ['$retryable 400', sdkError('Whatever', 400, { $retryable: { throttling: true } }), 'transient'],
    ['ECONNRESET', errno('ECONNRESET'), 'transient'],
    ['EPIPE', errno('EPIPE'), 'transient'],
    ['ETIMEDOUT', errno('ETIMEDOUT'), 'transient'],
    ['socket hang up', new Error('socket hang up'), 'transient'],
    ['SDK TimeoutError', Object.assign(new Error('Connection timed out after 500 ms'), { name: 'TimeoutError' }), 'transient'],
    ['ENOSPC (fs store)', errno('ENOSPC'), 'permanent'],
    ['a CagedError', new CagedError('not_found', 'blob x not found'), 'other'],
    ['an AbortError', new DOMException('aborted', 'AbortError'), 'other'],
    ['a plain Error (the body, a bug)', new Error('disk on fire'), 'other'],
  ])('%s is %s', (_name, err, kind) => {
    expect(classifyStorageError(err)).toBe(kind);
  });
});

describe('withRetry', () => {
  const fast = { baseMs: 10, maxDelayMs: 40 };

  it('retries transient failures with growing, jittered delays, tells each retry, and tells when it recovered', async () => {
    const infos: RetryInfo[] = [];
    let recovered = 0;
    let calls = 0;
    const out = await withRetry(
      'UploadPart 1 of k',
      async () => {
        if (++calls <= 3) throw sdkError('SlowDown', 503);
        return 'ok';
      },
      { totalMs: 5000, ...fast, random: () => 1 },
      { onRetry: (i) => infos.push(i), onRecovered: () => recovered++ },
    );
    expect(out).toBe('ok');
    expect(infos.map((i) => i.attempt)).toEqual([1, 2, 3]);
    expect(infos[0]).toMatchObject({ what: 'UploadPart 1 of k', error: 'SlowDown (HTTP 503): SlowDown message' });
    expect(infos.every((i) => i.nextAt instanceof Date)).toBe(true);
    expect(recovered).toBe(1);
  });

  it('throws a permanent failure at once as storage_error with the store code', async () => {
    let calls = 0;
    const err = await withRetry('PutObject k', async () => {
      calls++;
      throw sdkError('AccessDenied', 403);
    }, { totalMs: 5000, ...fast }).catch((e: unknown) => e);
    expect(calls).toBe(1);
    expect(err).toBeInstanceOf(CagedError);
    expect(err).toMatchObject({ code: 'storage_error', details: { store_code: 'AccessDenied', http_status: 403, operation: 'PutObject k' } });
    expect((err as Error).message).toBe('object store refused PutObject k: AccessDenied (HTTP 403): AccessDenied message');
  });

  it('throws storage_unavailable once transient failures outlast the bound', async () => {
    const started = Date.now();
    let calls = 0;
    const err = await withRetry('HeadObject k', async () => {
      calls++;
      throw errno('ECONNRESET');
    }, { totalMs: 300, ...fast }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'storage_unavailable' });
    expect((err as Error).message).toMatch(/^object store kept failing HeadObject k for \d+ s \(\d+ attempts\): ECONNRESET/);
    expect(calls).toBeGreaterThan(3);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('passes other errors through unchanged, untried again', async () => {
    const boom = new Error('disk on fire');
    let calls = 0;
    await expect(withRetry('x', async () => {
      calls++;
      throw boom;
    }, { totalMs: 5000 })).rejects.toBe(boom);
    expect(calls).toBe(1);
  });

  it('honours the signal during a backoff', async () => {
    const ctl = new AbortController();
    const started = Date.now();
    setTimeout(() => ctl.abort(), 50);
    const err = await withRetry('x', async () => {
      throw sdkError('SlowDown', 503);
    }, { totalMs: 60_000, baseMs: 10_000, maxDelayMs: 10_000 }, { signal: ctl.signal }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'AbortError' });
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('storage_error and storage_unavailable cross into Temporal as non-retryable failures', () => {
    for (const code of ['storage_error', 'storage_unavailable'] as const) {
      const f = toFailure(new CagedError(code, 'x'));
      expect(f).toBeInstanceOf(ApplicationFailure);
      expect(f).toMatchObject({ type: code, nonRetryable: true });
    }
  });
});

const SERVERS = [
  { name: 'moto', endpoint: () => inject('s3Endpoint') },
  { name: 's3rver', endpoint: () => inject('s3rverEndpoint') },
] as const;

for (const server of SERVERS) {
  describe(`RetryingBlobStore over S3 (${server.name}) through the fault proxy`, () => {
    let proxy: FaultProxy;
    let inner: S3BlobStore;
    let store: RetryingBlobStore;
    const retries: RetryInfo[] = [];
    const prefix = `retry-${Date.now()}-${process.pid}-${server.name}/`;
    beforeAll(async () => {
      proxy = await startFaultProxy(server.endpoint());
      inner = new S3BlobStore(
        {
          bucket: inject('s3Bucket'),
          endpoint: proxy.endpoint,
          region: 'us-east-1',
          forcePathStyle: true,
          prefix,
          partSizeBytes: 5 * MiB,
          queueSize: 2,
          requestTimeoutMs: 1000,
        },
        { credentials: { accessKeyId: 'test', secretAccessKey: 'test' } },
      );
      store = new RetryingBlobStore(inner, { totalMs: 10_000, baseMs: 50, maxDelayMs: 500, onRetry: (i) => retries.push(i) });
    });
    afterAll(async () => {
      await store?.close();
      await proxy?.close();
    });
    beforeEach(() => {
      proxy.clear();
      retries.length = 0;
      for (const k of Object.keys(proxy.injected)) proxy.injected[k as keyof FaultProxy['injected']] = 0;
    });

    const roundTrip = async (key: string, data: Buffer) => {
      expect(await store.put(key, Readable.from([data]))).toEqual({ size: data.byteLength });
      const chunks: Buffer[] = [];
      for await (const c of await store.get(key)) chunks.push(c as Buffer);
      expect(sha256(Buffer.concat(chunks))).toBe(sha256(data));
    };

    it('a burst of 503 SlowDown on parts: the put succeeds, each part retried from its buffer', async () => {
      proxy.add({ fault: 'slowdown', ops: ['UploadPart'], count: 4 });
      await roundTrip('burst', randomBytes(11 * MiB));
      expect(proxy.injected.slowdown).toBe(4);
      expect(retries.filter((r) => r.what.startsWith('UploadPart'))).toHaveLength(4);
      expect(retries[0]!.error).toMatch(/^SlowDown \(HTTP 503\)/);
    });

    it('a connection reset in the middle of a part body: the part is sent again', async () => {
      proxy.add({ fault: 'reset', ops: ['UploadPart'], count: 2, afterBytes: MiB });
      await roundTrip('reset', randomBytes(11 * MiB));
      expect(proxy.injected.reset).toBe(2);
      expect(retries.filter((r) => r.what.startsWith('UploadPart'))).toHaveLength(2);
    });

    it('a body that breaks off mid-download is resumed where it stopped, with a ranged GET', async () => {
      const data = randomBytes(11 * MiB);
      expect(await store.put('resume', Readable.from([data]))).toEqual({ size: data.byteLength });
      proxy.add({ fault: 'reset-response', ops: ['GetObject'], count: 2, afterBytes: 3 * MiB });
      const chunks: Buffer[] = [];
      for await (const c of await store.get('resume')) chunks.push(c as Buffer);
      expect(sha256(Buffer.concat(chunks))).toBe(sha256(data));
      expect(proxy.injected['reset-response']).toBe(2);
      expect(proxy.seen.filter((r) => r.op === 'GetObject' && r.key.endsWith('resume')).map((r) => r.status)).toEqual([0, 0, 206]);
    });

    it('a response slower than the request timeout: a TimeoutError, retried', async () => {
      await roundTrip('slow', randomBytes(1000));
      proxy.add({ fault: 'slow', ops: ['HeadObject'], count: 1, delayMs: 2500 });
      expect(await store.head('slow')).toEqual({ key: 'slow', size: 1000 });
      expect(proxy.injected.slow).toBe(1);
      expect(retries).toHaveLength(1);
      expect(retries[0]!.what).toBe('HeadObject slow');
    });

    it('503s on reads (GetObject, ListObjects) are retried too', async () => {
      await roundTrip('reads/a', randomBytes(100));
      proxy.add({ fault: 'slowdown', ops: ['GetObject', 'ListObjects'], count: 2 });
      expect((await store.get('reads/a')).readable).toBe(true);
      const keys = [];
      for await (const b of store.list('reads/')) keys.push(b.key);
      expect(keys).toEqual(['reads/a']);
      expect(proxy.injected.slowdown).toBe(2);
    });

    it('403 AccessDenied: storage_error at once, no retry, nothing stored', async () => {
      proxy.add({ fault: 'forbidden', ops: ['UploadPart'], skip: 1 });
      const started = Date.now();
      const err = await store.put('denied', Readable.from([randomBytes(11 * MiB)])).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'storage_error', details: { store_code: 'AccessDenied', http_status: 403 } });
      expect(Date.now() - started).toBeLessThan(5000);
      expect(retries).toEqual([]);
      proxy.clear();
      expect(await store.head('denied')).toBeNull();
      expect(await store.abortIncomplete('denied')).toBe(0);
    });

    it('503s past the bound: storage_unavailable', async () => {
      const short = new RetryingBlobStore(inner, { totalMs: 600, baseMs: 50, maxDelayMs: 200 });
      proxy.add({ fault: 'slowdown', ops: ['GetObject', 'HeadObject'] });
      const err = await short.get('whatever').catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'storage_unavailable', details: { store_code: 'SlowDown', http_status: 503 } });
      // A HEAD's answer has no body: only its status tells what it was.
      const headErr = await short.head('whatever').catch((e: unknown) => e);
      expect(headErr).toMatchObject({ code: 'storage_unavailable', details: { http_status: 503 } });
      expect((headErr as Error).message).toMatch(/HTTP 503/);
      expect(proxy.injected.slowdown).toBeGreaterThanOrEqual(6);
    });

    // s3rver cannot abort a multipart upload at all (405): only where the server can is there something to prove.
    if (server.name === 'moto') {
      it('where uploads cannot be listed, a recorded upload id still finds and aborts what a crashed put left', async () => {
        const raw = new S3Client({
          endpoint: server.endpoint(),
          region: 'us-east-1',
          forcePathStyle: true,
          credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
        });
        try {
          const Key = `${prefix}crashed`;
          const { UploadId } = await raw.send(new CreateMultipartUploadCommand({ Bucket: inject('s3Bucket'), Key }));
          proxy.add({ fault: 'not-implemented', ops: ['ListMultipartUploads'] });
          expect(await store.abortIncomplete('crashed')).toBe(0);
          expect(await store.abortIncomplete('crashed', [UploadId!])).toBe(1);
          proxy.clear();
          const left = await raw.send(new ListMultipartUploadsCommand({ Bucket: inject('s3Bucket'), Prefix: Key }));
          expect(left.Uploads ?? []).toEqual([]);
        } finally {
          raw.destroy();
        }
      });

      it('a put whose own abort failed leaves its upload id with the store, so abortIncomplete finds it without listing', async () => {
        proxy.add({ fault: 'slowdown', ops: ['AbortMultipartUpload'], count: 3 });
        proxy.add({ fault: 'not-implemented', ops: ['ListMultipartUploads'] });
        const ids: string[] = [];
        const body = Readable.from(
          (async function* () {
            yield randomBytes(6 * MiB);
            throw new Error('disk on fire');
          })(),
        );
        await expect(store.put('abort-failed', body, { onUploadStarted: (id) => ids.push(id) })).rejects.toThrow('disk on fire');
        expect(ids).toHaveLength(1);
        expect(proxy.injected.slowdown).toBe(3);
        expect(await store.abortIncomplete('abort-failed')).toBe(1);
        const aborts = proxy.seen.filter((r) => r.op === 'AbortMultipartUpload' && r.key === `${prefix}abort-failed`);
        expect(aborts.map((r) => r.status)).toEqual([503, 503, 503, 204]);
      });
    }

    // moto accepts any credentials; s3rver checks them, so the refusal here is the real server's.
    if (server.name === 's3rver') {
      it('bad credentials: storage_error InvalidAccessKeyId at once, from the server itself', async () => {
        const bad = new RetryingBlobStore(
          new S3BlobStore(
            { bucket: inject('s3Bucket'), endpoint: proxy.endpoint, region: 'us-east-1', forcePathStyle: true, prefix, partSizeBytes: 5 * MiB, queueSize: 2 },
            { credentials: { accessKeyId: 'nobody', secretAccessKey: 'nothing' } },
          ),
          { totalMs: 10_000, onRetry: (i) => retries.push(i) },
        );
        try {
          await expect(bad.put('creds', Readable.from([randomBytes(100)]))).rejects.toMatchObject({
            code: 'storage_error',
            details: { store_code: 'InvalidAccessKeyId', http_status: 403 },
          });
          await expect(bad.get('creds')).rejects.toMatchObject({ code: 'storage_error', details: { store_code: 'InvalidAccessKeyId' } });
          expect(retries).toEqual([]);
          expect(proxy.seen.filter((r) => r.key === `${prefix}creds`).map((r) => [r.op, r.status])).toEqual([
            ['PutObject', 403],
            ['GetObject', 403],
          ]);
        } finally {
          await bad.close();
        }
      });
    }

    for (const quirk of ['no-such-upload', 'not-implemented'] as const) {
      it(`ListMultipartUploads answering with ${quirk}: abortIncomplete and delete succeed, listIncomplete lists nothing`, async () => {
        await roundTrip('quirk', randomBytes(100));
        proxy.add({ fault: quirk, ops: ['ListMultipartUploads'] });
        expect(await store.abortIncomplete('quirk')).toBe(0);
        const listed = [];
        for await (const u of store.listIncomplete!('')) listed.push(u);
        expect(listed).toEqual([]);
        await store.delete('quirk');
        expect(await store.head('quirk')).toBeNull();
        expect(proxy.injected[quirk]).toBe(2);
        expect(retries).toEqual([]);
      });
    }
  });
}
