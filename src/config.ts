import path from 'node:path';
import os from 'node:os';
import { z } from 'zod';

const bool = z
  .enum(['1', '0', 'true', 'false', 'yes', 'no'])
  .transform((v) => v === '1' || v === 'true' || v === 'yes');
const int = z.coerce.number().int().nonnegative();

const envSchema = z.object({
  CAGED_DATA_DIR: z.string().default('./.caged'),
  CAGED_HOST: z.string().default('127.0.0.1'),
  CAGED_PORT: int.default(8080),
  CAGED_PUBLIC_URL: z.string().url().optional(),
  CAGED_DEV_API_KEY: z.string().regex(/^caged_sk_[A-Za-z0-9_-]{16,}$/, 'must look like caged_sk_<random>').optional(),
  CAGED_ADMIN_TOKEN: z.string().min(16).optional(),
  CAGED_URL_SECRET: z.string().min(16).optional(),
  CAGED_HOST_ID: z.string().regex(/^[a-z0-9-]{1,40}$/).default('local'),
  CAGED_EXEC_ENABLED: bool.optional(),
  CAGED_TEMPORAL_PORT: int.default(7233),
  /** The dev server's web UI; 0 turns it off. Unset: CAGED_TEMPORAL_PORT + 1000, as the Temporal CLI does. */
  CAGED_TEMPORAL_UI_PORT: int.max(65_535).optional(),
  CAGED_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  CAGED_LOG_FORMAT: z.enum(['auto', 'json', 'pretty']).default('auto'),
  CAGED_MAX_SNAPSHOTS_PER_SANDBOX: int.default(20),
  CAGED_MAX_ACCOUNT_BYTES: int.default(10 * 1024 ** 3),
  CAGED_MAX_SNAPSHOT_BYTES: int.default(2 * 1024 ** 3),
  CAGED_URL_EXPIRY_S: int.default(3600),
  CAGED_IDLE_TIMEOUT_S: int.default(300),
  CAGED_IMPORT_MAX_ENTRIES: int.default(200_000),
  CAGED_IMPORT_MAX_PATH: int.default(4096),
  CAGED_IMPORT_MAX_UNCOMPRESSED_BYTES: int.default(8 * 1024 ** 3),
  CAGED_OPERATION_DEADLINE_S: int.min(1).default(1800),
  CAGED_OPERATION_DEADLINE_S_PER_GIB: int.min(0).default(600),
  CAGED_MAX_FILE_UPLOAD_BYTES: int.default(1024 ** 3),
  CAGED_MAX_SANDBOXES_PER_ACCOUNT: int.default(50),
  TEMPORAL_ADDRESS: z.string().optional(),
  TEMPORAL_NAMESPACE: z.string().default('default'),
  TEMPORAL_TASK_QUEUE: z.string().default('caged'),
  TEMPORAL_CLI: z.string().optional(),
  DATABASE_URL: z.string().optional(),
  S3_BUCKET: z.string().optional(),
  S3_ENDPOINT: z.string().url().optional(),
  S3_PUBLIC_ENDPOINT: z.string().url().optional(),
  S3_REGION: z.string().default('us-east-1'),
  S3_FORCE_PATH_STYLE: bool.optional(),
  S3_PREFIX: z.string().default(''),
  S3_PART_SIZE_MB: int.min(5).default(16),
  S3_QUEUE_SIZE: int.min(1).default(2),
  /** A request whose socket is idle this long fails and is retried; unset: derived from CAGED_STORAGE_RETRY_S. */
  S3_REQUEST_TIMEOUT_S: int.min(1).optional(),
  CAGED_STORAGE_RETRY_S: int.default(180),
  /** Local copies of remote packs kept for restores and forks on this host. */
  CAGED_PACK_CACHE_BYTES: int.min(0).default(2 * 1024 ** 3),
  /** How often the chunk store's collector runs (a Temporal Schedule), and the least a condemned pack waits. */
  CAGED_GC_INTERVAL_S: int.min(10).default(60),
  CAGED_GC_GRACE_S: int.default(120),
});

export interface Limits {
  maxSnapshotsPerSandbox: number;
  maxAccountBytes: number;
  maxSnapshotBytes: number;
  urlExpirySeconds: number;
  importMaxEntries: number;
  importMaxPathLength: number;
  importMaxUncompressedBytes: number;
  /** Largest body of PUT /v1/sandboxes/{id}/files/{path}. */
  maxFileUploadBytes: number;
  /** Live sandboxes (not deleted) one account may have, forks included. */
  maxSandboxesPerAccount: number;
}

export interface S3Config {
  bucket: string;
  endpoint?: string;
  publicEndpoint?: string;
  region: string;
  forcePathStyle: boolean;
  prefix: string;
  partSizeBytes: number;
  queueSize: number;
  /** The SDK's own attempts per request (default 1: RetryingBlobStore owns retries). */
  sdkMaxAttempts?: number;
  /** A request whose socket stays idle this long fails (transient); default: s3RequestTimeoutMs of the retry budget. */
  requestTimeoutMs?: number;
}

export interface Config {
  dataDir: string;
  httpHost: string;
  httpPort: number;
  publicUrl: string;
  devApiKey?: string;
  adminToken?: string;
  urlSecret?: string;
  hostId: string;
  execEnabled: boolean;
  /** devServerPort and devServerUiPort (0: no UI) are for the dev server `caged dev` starts when no address is given. */
  temporal: { address?: string; namespace: string; taskQueue: string; devServerPort: number; devServerUiPort: number; cli?: string };
  databaseUrl?: string;
  s3?: S3Config;
  /** How long transient object-store failures of one request are retried before it fails as storage_unavailable. */
  storageRetryMs: number;
  packCacheBytes: number;
  gc: { intervalSeconds: number; graceSeconds: number };
  limits: Limits;
  defaultIdleTimeoutSeconds: number;
  logLevel: string;
  /** auto: pretty in a terminal, JSON otherwise. */
  logFormat: 'auto' | 'json' | 'pretty';
  /** An operation's deadline: base seconds plus seconds per GiB it may move. */
  deadline: { baseSeconds: number; secondsPerGiB: number };
}

/** Reads configuration from the environment; a bad value stops the process with the variable named. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, mode: 'dev' | 'prod' = 'prod'): Config {
  const parsed = envSchema.safeParse(
    Object.fromEntries(Object.entries(env).filter(([k, v]) => v !== '' && k in envSchema.shape)),
  );
  if (!parsed.success) {
    const details = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new Error(`invalid configuration: ${details}`);
  }
  const e = parsed.data;
  const dataDir = path.resolve(e.CAGED_DATA_DIR);
  return {
    dataDir,
    httpHost: e.CAGED_HOST,
    httpPort: e.CAGED_PORT,
    publicUrl: e.CAGED_PUBLIC_URL ?? `http://${e.CAGED_HOST === '0.0.0.0' ? os.hostname() : e.CAGED_HOST}:${e.CAGED_PORT}`,
    devApiKey: e.CAGED_DEV_API_KEY,
    adminToken: e.CAGED_ADMIN_TOKEN,
    urlSecret: e.CAGED_URL_SECRET,
    hostId: e.CAGED_HOST_ID,
    execEnabled: e.CAGED_EXEC_ENABLED ?? mode === 'dev',
    temporal: {
      address: e.TEMPORAL_ADDRESS,
      namespace: e.TEMPORAL_NAMESPACE,
      taskQueue: e.TEMPORAL_TASK_QUEUE,
      devServerPort: e.CAGED_TEMPORAL_PORT,
      devServerUiPort: e.CAGED_TEMPORAL_UI_PORT ?? e.CAGED_TEMPORAL_PORT + 1000,
      cli: e.TEMPORAL_CLI,
    },
    databaseUrl: e.DATABASE_URL,
    s3: e.S3_BUCKET
      ? {
          bucket: e.S3_BUCKET,
          endpoint: e.S3_ENDPOINT,
          publicEndpoint: e.S3_PUBLIC_ENDPOINT,
          region: e.S3_REGION,
          forcePathStyle: e.S3_FORCE_PATH_STYLE ?? e.S3_ENDPOINT !== undefined,
          prefix: e.S3_PREFIX,
          partSizeBytes: e.S3_PART_SIZE_MB * 1024 * 1024,
          queueSize: e.S3_QUEUE_SIZE,
          ...(e.S3_REQUEST_TIMEOUT_S !== undefined && { requestTimeoutMs: e.S3_REQUEST_TIMEOUT_S * 1000 }),
        }
      : undefined,
    storageRetryMs: e.CAGED_STORAGE_RETRY_S * 1000,
    packCacheBytes: e.CAGED_PACK_CACHE_BYTES,
    gc: { intervalSeconds: e.CAGED_GC_INTERVAL_S, graceSeconds: e.CAGED_GC_GRACE_S },
    limits: {
      maxSnapshotsPerSandbox: e.CAGED_MAX_SNAPSHOTS_PER_SANDBOX,
      maxAccountBytes: e.CAGED_MAX_ACCOUNT_BYTES,
      maxSnapshotBytes: e.CAGED_MAX_SNAPSHOT_BYTES,
      urlExpirySeconds: e.CAGED_URL_EXPIRY_S,
      importMaxEntries: e.CAGED_IMPORT_MAX_ENTRIES,
      importMaxPathLength: e.CAGED_IMPORT_MAX_PATH,
      importMaxUncompressedBytes: e.CAGED_IMPORT_MAX_UNCOMPRESSED_BYTES,
      maxFileUploadBytes: e.CAGED_MAX_FILE_UPLOAD_BYTES,
      maxSandboxesPerAccount: e.CAGED_MAX_SANDBOXES_PER_ACCOUNT,
    },
    defaultIdleTimeoutSeconds: e.CAGED_IDLE_TIMEOUT_S,
    logLevel: e.CAGED_LOG_LEVEL,
    logFormat: e.CAGED_LOG_FORMAT,
    deadline: { baseSeconds: e.CAGED_OPERATION_DEADLINE_S, secondsPerGiB: e.CAGED_OPERATION_DEADLINE_S_PER_GIB },
  };
}
