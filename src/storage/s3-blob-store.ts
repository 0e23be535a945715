import { Readable, addAbortSignal } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type MultipartUpload,
  UploadPartCommand,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { S3Config } from '../config.js';
import { CagedError } from '../shared/errors.js';
import { assertValidKey, type BlobInfo, type BlobStore, type CallOptions, type IncompleteUpload, type PutOptions, type RetryRunner } from './blob-store.js';
import { isMissingCall, storageErrorCode } from './errors.js';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

const MAX_PRESIGN_SECONDS = 7 * 24 * 3600; // SigV4 refuses anything longer

export class S3BlobStore implements BlobStore {
  readonly kind = 's3' as const;
  private readonly client: S3Client;
  /** Signs for the host clients will reach, which may differ from the one this process uses. */
  private readonly presigner: S3Client;
  /** Multipart uploads this process started and has not completed or aborted yet, by full key. */
  private readonly started = new Map<string, Set<string>>();

  constructor(
    private readonly cfg: S3Config,
    opts: { credentials?: S3Credentials } = {},
  ) {
    // S3-compatible servers (MinIO, R2, moto) reject or mangle the SDK's default CRC32 trailers.
    const custom = cfg.endpoint !== undefined;
    this.client = new S3Client(clientConfig(cfg, cfg.endpoint, opts.credentials, custom));
    // A presigned URL must not require checksum headers, or a plain `curl URL` would fail.
    this.presigner = new S3Client(clientConfig(cfg, cfg.publicEndpoint ?? cfg.endpoint, opts.credentials, true));
  }

  /**
   * Streams `body` as a multipart upload of parts of cfg.partSizeBytes, at most cfg.queueSize in
   * flight: memory stays within (queueSize + 1) × partSize. Each request runs through opts.retry,
   * so a throttled or reset part is sent again from its buffer; the body is never re-read. A body
   * shorter than one part is a single PutObject. On any failure the upload is aborted before put()
   * rejects, and its id stays recorded until then so abortIncomplete() can abort it by id.
   */
  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<{ size: number }> {
    const Key = this.fullKey(key);
    const Bucket = this.cfg.bucket;
    const { signal } = opts;
    const retry: RetryRunner = opts.retry ?? ((_what, fn) => fn());
    if (signal?.aborted) {
      body.destroy();
      throw signal.reason;
    }
    const partSize = this.cfg.partSizeBytes;
    const queueSize = Math.max(1, this.cfg.queueSize);
    // Cancels the parts in flight once one has failed for good, or the caller gave up.
    const stop = new AbortController();
    const requestSignal = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
    const onAbort = () => body.destroy(signal?.reason instanceof Error ? signal.reason : new DOMException('put aborted', 'AbortError'));
    signal?.addEventListener('abort', onAbort, { once: true });
    let uploadId: string | undefined;
    let failure: { err: unknown } | undefined;
    const inFlight = new Set<Promise<void>>();
    const parts: { PartNumber: number; ETag?: string }[] = [];
    let size = 0;
    const fail = (err: unknown) => {
      failure ??= { err };
      if (!stop.signal.aborted) stop.abort(err);
      body.destroy();
    };
    try {
      let partNumber = 0;
      for await (const buf of fixedParts(body, partSize)) {
        if (failure) break;
        partNumber++;
        size += buf.byteLength;
        if (partNumber === 1 && buf.byteLength < partSize) {
          // The whole body fits one part: no multipart upload to start, complete or leave behind.
          await retry(`PutObject ${key}`, () =>
            this.client.send(new PutObjectCommand({ Bucket, Key, Body: buf, ContentLength: buf.byteLength, ContentType: opts.contentType }), {
              abortSignal: requestSignal,
            }),
          );
          return { size };
        }
        if (uploadId === undefined) {
          const created = await retry(`CreateMultipartUpload ${key}`, () =>
            this.client.send(new CreateMultipartUploadCommand({ Bucket, Key, ContentType: opts.contentType }), { abortSignal: requestSignal }),
          );
          if (!created.UploadId) throw new Error(`S3 CreateMultipartUpload for ${key} returned no UploadId`);
          uploadId = created.UploadId;
          this.remember(Key, uploadId);
          opts.onUploadStarted?.(uploadId);
        }
        const id = uploadId;
        const n = partNumber;
        const sending = retry(`UploadPart ${n} of ${key}`, () =>
          this.client.send(new UploadPartCommand({ Bucket, Key, UploadId: id, PartNumber: n, Body: buf, ContentLength: buf.byteLength }), {
            abortSignal: requestSignal,
          }),
        ).then(
          (out) => void parts.push({ PartNumber: n, ETag: out.ETag }),
          (err: unknown) => fail(err),
        );
        inFlight.add(sending);
        void sending.finally(() => inFlight.delete(sending));
        while (inFlight.size >= queueSize && !failure) await Promise.race(inFlight);
      }
      await Promise.all(inFlight);
      if (failure) throw failure.err;
      signal?.throwIfAborted();
      const id = uploadId!;
      parts.sort((a, b) => a.PartNumber - b.PartNumber);
      let attempts = 0;
      await retry(`CompleteMultipartUpload ${key}`, async () => {
        attempts++;
        try {
          await this.client.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId: id, MultipartUpload: { Parts: parts } }));
        } catch (err) {
          // A completion whose answer was lost did complete: the retry finds the upload gone and the object there.
          if (attempts > 1 && storageErrorCode(err) === 'NoSuchUpload' && (await this.head(key))?.size === size) return;
          throw err;
        }
      });
      this.forget(Key, id);
      return { size };
    } catch (err) {
      fail(err);
      await Promise.allSettled(inFlight);
      if (uploadId !== undefined) await this.abortAfterFailure(Key, uploadId);
      if (signal?.aborted) throw signal.reason;
      throw failure?.err ?? err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Aborts an upload put() gave up on; a few quick tries, then it is left to abortIncomplete() by its recorded id. */
  private async abortAfterFailure(Key: string, UploadId: string): Promise<void> {
    for (let i = 0; i < 3; i++) {
      try {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.cfg.bucket, Key, UploadId }));
        this.forget(Key, UploadId);
        return;
      } catch (err) {
        // Gone already, or a server that cannot abort (s3rver answers 405): nothing more to do here.
        if (isMissingCall(err)) {
          this.forget(Key, UploadId);
          return;
        }
        await sleep(200 * (i + 1));
      }
    }
  }

  private remember(Key: string, uploadId: string): void {
    let ids = this.started.get(Key);
    if (!ids) this.started.set(Key, (ids = new Set()));
    ids.add(uploadId);
  }

  private forget(Key: string, uploadId: string): void {
    const ids = this.started.get(Key);
    ids?.delete(uploadId);
    if (ids?.size === 0) this.started.delete(Key);
  }

  async get(key: string, opts: CallOptions = {}): Promise<Readable> {
    try {
      const Range = opts.offset ? `bytes=${opts.offset}-` : undefined;
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.cfg.bucket, Key: this.fullKey(key), Range }), {
        abortSignal: opts.signal,
      });
      if (!(out.Body instanceof Readable)) throw new Error('S3 GetObject returned a body that is not a Node stream');
      return opts.signal ? addAbortSignal(opts.signal, out.Body) : out.Body;
    } catch (err) {
      if (isNotFound(err)) throw new CagedError('not_found', `blob ${key} not found`);
      throw err;
    }
  }

  async head(key: string): Promise<BlobInfo | null> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.cfg.bucket, Key: this.fullKey(key) }));
      return { key, size: out.ContentLength ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.cfg.bucket, Key: this.fullKey(key) }));
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    let ContinuationToken: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.cfg.bucket, Prefix: this.cfg.prefix + prefix, ContinuationToken }),
      );
      for (const obj of page.Contents ?? []) {
        if (obj.Key === undefined) continue;
        yield { key: obj.Key.slice(this.cfg.prefix.length), size: obj.Size ?? 0, modifiedAt: obj.LastModified };
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
  }

  async abortIncomplete(key: string, uploadIds: readonly string[] = []): Promise<number> {
    const Key = this.fullKey(key);
    // Recorded ids first: they are found even where the server cannot list uploads.
    const known = new Set([...uploadIds, ...(this.started.get(Key) ?? [])]);
    let aborted = 0;
    for (const id of known) if (await this.abortUpload(Key, id)) aborted++;
    // Prefix also matches longer keys ("a" matches "a.bak"); only this exact key is ours to abort.
    for await (const up of this.listUploads(Key)) {
      if (up.Key !== Key || !up.UploadId || known.has(up.UploadId)) continue;
      if (await this.abortUpload(Key, up.UploadId)) aborted++;
    }
    return aborted;
  }

  /** Multipart uploads under `prefix`; nothing when the server cannot list them (501, or 404 on an empty list). */
  async *listIncomplete(prefix: string): AsyncIterable<IncompleteUpload> {
    if (prefix !== '') assertValidKey(`${prefix}x`);
    for await (const up of this.listUploads(this.cfg.prefix + prefix)) {
      if (!up.Key || !up.UploadId) continue;
      yield { key: up.Key.slice(this.cfg.prefix.length), uploadId: up.UploadId, ...(up.Initiated && { initiated: up.Initiated }) };
    }
  }

  /** ListMultipartUploads is best-effort: a server that lacks it, or answers 404 when nothing is listed, lists nothing. */
  private async *listUploads(Prefix: string): AsyncGenerator<MultipartUpload> {
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.cfg.bucket, Prefix, KeyMarker, UploadIdMarker }));
      } catch (err) {
        if (isMissingCall(err)) return;
        throw err;
      }
      yield* page.Uploads ?? [];
      const more = page.IsTruncated === true;
      KeyMarker = more ? page.NextKeyMarker : undefined;
      UploadIdMarker = more ? page.NextUploadIdMarker : undefined;
    } while (KeyMarker);
  }

  /**
   * True when this call aborted it. An upload already gone (completed, aborted) is not an error,
   * nor is a server without the call (405/501): a bucket lifecycle rule is what cleans there.
   */
  private async abortUpload(Key: string, UploadId: string): Promise<boolean> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.cfg.bucket, Key, UploadId }));
      this.forget(Key, UploadId);
      return true;
    } catch (err) {
      if (!isMissingCall(err)) throw err;
      this.forget(Key, UploadId);
      return false;
    }
  }

  async presignGet(key: string, expiresInSeconds: number, downloadName: string): Promise<string> {
    if (!Number.isInteger(expiresInSeconds) || expiresInSeconds < 1 || expiresInSeconds > MAX_PRESIGN_SECONDS) {
      throw new CagedError('invalid_input', `URL expiry must be 1..${MAX_PRESIGN_SECONDS} seconds, got ${expiresInSeconds}`);
    }
    const command = new GetObjectCommand({
      Bucket: this.cfg.bucket,
      Key: this.fullKey(key),
      ResponseContentDisposition: attachment(downloadName),
    });
    return getSignedUrl(this.presigner, command, { expiresIn: expiresInSeconds });
  }

  async close(): Promise<void> {
    this.client.destroy();
    this.presigner.destroy();
  }

  private fullKey(key: string): string {
    assertValidKey(key);
    return this.cfg.prefix + key;
  }
}

function clientConfig(
  cfg: S3Config,
  endpoint: string | undefined,
  credentials: S3Credentials | undefined,
  checksumsWhenRequired: boolean,
): S3ClientConfig {
  return {
    region: cfg.region,
    // RetryingBlobStore owns retry timing and classification; the SDK's own retries would multiply it.
    maxAttempts: cfg.sdkMaxAttempts ?? 1,
    // Without these a server that stops answering holds a request (and the activity) forever.
    requestHandler: { connectionTimeout: 10_000, socketTimeout: cfg.requestTimeoutMs ?? 30_000 },
    forcePathStyle: cfg.forcePathStyle,
    ...(endpoint !== undefined && { endpoint }),
    ...(credentials && { credentials }),
    ...(checksumsWhenRequired && {
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    }),
  };
}

/** Cuts a stream into buffers of exactly `size` bytes (the last one shorter; one empty buffer for an empty stream). */
async function* fixedParts(body: Readable, size: number): AsyncGenerator<Buffer> {
  let buf = Buffer.allocUnsafe(size);
  let filled = 0;
  let yielded = false;
  for await (const chunk of body) {
    let data: Buffer = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    while (data.byteLength > 0) {
      const n = Math.min(size - filled, data.byteLength);
      data.copy(buf, filled, 0, n);
      filled += n;
      data = data.subarray(n);
      if (filled === size) {
        yielded = true;
        yield buf;
        buf = Buffer.allocUnsafe(size);
        filled = 0;
      }
    }
  }
  if (filled > 0 || !yielded) yield buf.subarray(0, filled);
}

function attachment(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  if (ascii === name) return `attachment; filename="${name}"`;
  // RFC 6266: old clients take the ASCII fallback, others the exact UTF-8 name.
  const exact = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${ascii}"; filename*=UTF-8''${exact}`;
}

function errorName(err: unknown): string | undefined {
  return (err as { name?: string } | undefined)?.name;
}

function isNotFound(err: unknown): boolean {
  const name = errorName(err);
  return name === 'NoSuchKey' || name === 'NotFound';
}
