import { Readable, Transform, addAbortSignal, pipeline } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
  UploadPartCommand,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { S3Config } from '../config.js';
import { CagedError } from '../shared/errors.js';
import { assertValidKey, type BlobInfo, type BlobStore, type PutOptions } from './blob-store.js';

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

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<{ size: number }> {
    const Key = this.fullKey(key);
    const { signal } = opts;
    if (signal?.aborted) {
      body.destroy();
      throw signal.reason;
    }
    let size = 0;
    // Handing lib-storage a plain Transform also keeps it from guessing the length from the body
    // (fs.ReadStream paths, .length), which is what broke uploads in aws-sdk-js-v3 #7382.
    const counted = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.byteLength;
        done(null, chunk);
      },
    });
    // Destroying it after the SDK has read it all must not surface as an uncaught error.
    counted.on('error', () => {});
    const doomed = new AbortController();
    // One failure dooms the whole upload: stop reading the source and cancel sibling part uploads,
    // so lib-storage reaches its AbortMultipartUpload quickly instead of draining the body first.
    const fail = (err: unknown) => {
      if (!doomed.signal.aborted) doomed.abort(err);
      counted.destroy(err instanceof Error ? err : new Error(String(err)));
    };
    pipeline(body, counted, (err) => err && fail(err));
    const onAbort = () => fail(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    // upload.abort() is deliberately not used: it makes done() reject at once while parts are
    // still in flight and before AbortMultipartUpload is sent, so put() could return with the
    // upload still listed. Failing the body instead makes done() settle only after that cleanup.
    const upload = new Upload({
      client: watchedClient(this.client, doomed.signal, fail),
      params: { Bucket: this.cfg.bucket, Key, Body: counted, ContentType: opts.contentType },
      partSize: this.cfg.partSizeBytes,
      queueSize: this.cfg.queueSize,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
      return { size };
    } catch (err) {
      fail(err);
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async get(key: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.cfg.bucket, Key: this.fullKey(key) }), {
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

  async abortIncomplete(key: string): Promise<number> {
    const Key = this.fullKey(key);
    let aborted = 0;
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    do {
      const page = await this.client.send(
        new ListMultipartUploadsCommand({ Bucket: this.cfg.bucket, Prefix: Key, KeyMarker, UploadIdMarker }),
      );
      // Prefix also matches longer keys ("a" matches "a.bak"); only this exact key is ours to abort.
      for (const up of page.Uploads ?? []) {
        if (up.Key !== Key || !up.UploadId) continue;
        try {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.cfg.bucket, Key, UploadId: up.UploadId }));
          aborted++;
        } catch (err) {
          if (!isNoSuchUpload(err)) throw err;
        }
      }
      const more = page.IsTruncated === true;
      KeyMarker = more ? page.NextKeyMarker : undefined;
      UploadIdMarker = more ? page.NextUploadIdMarker : undefined;
    } while (KeyMarker);
    return aborted;
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
    forcePathStyle: cfg.forcePathStyle,
    ...(endpoint !== undefined && { endpoint }),
    ...(credentials && { credentials }),
    ...(checksumsWhenRequired && {
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    }),
  };
}

type SendArgs = Parameters<S3Client['send']>;

/**
 * The client as one Upload sees it: every failed request reports to onError, and part uploads
 * carry partSignal so they can be cancelled. Abort and complete calls stay uncancellable: they
 * are what cleans up or commits.
 */
function watchedClient(client: S3Client, partSignal: AbortSignal, onError: (err: unknown) => void): S3Client {
  const send = (command: SendArgs[0], options?: SendArgs[1]) =>
    client
      .send(command, command instanceof UploadPartCommand ? { ...options, abortSignal: partSignal } : options)
      .catch((err: unknown) => {
        onError(err);
        throw err;
      });
  return new Proxy(client, { get: (target, prop) => (prop === 'send' ? send : Reflect.get(target, prop)) });
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

function isNoSuchUpload(err: unknown): boolean {
  return errorName(err) === 'NoSuchUpload';
}
