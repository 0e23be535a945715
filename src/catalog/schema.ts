import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
/** int8 columns come back as strings from node-postgres; the repositories convert them. */
type BigIntCol = ColumnType<string | number | bigint, number, number>;
type Json<T> = ColumnType<T, string, string>;

/** A request of the operation's that failed transiently and is retried: when, why, and the next try. */
export interface RetryingJson {
  attempt: number;
  error: string;
  next_at: string;
}

export type SandboxState = 'creating' | 'running' | 'paused' | 'deleted';
export type SnapshotState = 'pending' | 'ready' | 'failed' | 'deleting' | 'deleted';
export type SnapshotKind = 'manual' | 'auto';
export type SnapshotFormat = 'tar.zst' | 'chunks';
export type PackState = 'writing' | 'live' | 'condemned' | 'deleted';
export type OperationStatus = 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface AccountsTable {
  id: string;
  name: string;
  api_key_hash: string;
  /** The key of the account's chunk ids and boundaries (32 bytes); made at its first chunked snapshot. */
  chunk_key: Buffer | null;
  created_at: Timestamp;
}

export interface SandboxesTable {
  /** Insertion order, for stable newest-first lists. */
  seq: Generated<string>;
  id: string;
  account_id: string;
  template: string;
  cpu: number;
  memory_mb: number;
  state: SandboxState;
  host_id: string;
  idle_timeout_s: number;
  source_snapshot_id: string | null;
  created_at: Timestamp;
  last_active_at: Timestamp;
}

export interface SnapshotsTable {
  /** Insertion order, for stable newest-first lists. */
  seq: Generated<string>;
  id: string;
  account_id: string;
  sandbox_id: string;
  name: string;
  kind: SnapshotKind;
  state: SnapshotState;
  object_key: string;
  size_bytes: BigIntCol | null;
  /** Bytes of the files the snapshot's tree expands to (what a restore writes); null where unknown. */
  tree_bytes: BigIntCol | null;
  sha256: string | null;
  /** 'chunks': a manifest (object_key) plus chunk references; 'tar.zst': one archive (earlier versions). */
  format: ColumnType<SnapshotFormat, SnapshotFormat | undefined, SnapshotFormat>;
  /** Pack bytes this snapshot added to the store (chunks no other snapshot had stored). */
  stored_bytes: BigIntCol | null;
  manifest_bytes: BigIntCol | null;
  /** The snapshot this one was taken incrementally against. */
  parent_id: string | null;
  error_code: string | null;
  error_message: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface OperationsTable {
  /** Insertion order, for stable newest-first lists. */
  seq: Generated<string>;
  id: string;
  account_id: string;
  type: string;
  status: OperationStatus;
  sandbox_id: string | null;
  snapshot_id: string | null;
  step: string;
  bytes_done: BigIntCol;
  bytes_total: BigIntCol | null;
  /** Set while a data mover retries a storage request; cleared when the transfer proceeds. */
  retrying: ColumnType<RetryingJson | null, string | null | undefined, string | null>;
  input: Json<unknown>;
  result: Json<unknown> | null;
  error_code: string | null;
  error_message: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
  finished_at: Timestamp | null;
}

export interface IdempotencyKeysTable {
  account_id: string;
  key: string;
  request_hash: string;
  status_code: number | null;
  response: Json<unknown> | null;
  created_at: Timestamp;
}

export interface SessionsTable {
  id: Generated<number>;
  sandbox_id: string;
  command: Json<string[]>;
  background: boolean;
  pid: number | null;
  exit_code: number | null;
  started_at: Timestamp;
  finished_at: Timestamp | null;
}

export interface PacksTable {
  id: string;
  account_id: string;
  state: PackState;
  object_key: string;
  size_bytes: ColumnType<string | number | bigint, number | undefined, number>;
  chunk_count: ColumnType<number, number | undefined, number>;
  /** The snapshot writing the pack (its lease while 'writing'); null for the collector's repacks. */
  writer_snapshot_id: string | null;
  created_at: Timestamp;
  updated_at: Timestamp;
  condemned_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface ChunksTable {
  id: Generated<string>;
  account_id: string;
  hash: Buffer;
  pack_id: string;
  frame_offset: BigIntCol;
  frame_length: number;
  frame_raw_length: number;
  chunk_offset: number;
  raw_length: number;
}

export interface SnapshotChunksTable {
  snapshot_id: string;
  chunk_id: string | number;
}

export interface Database {
  accounts: AccountsTable;
  sandboxes: SandboxesTable;
  snapshots: SnapshotsTable;
  operations: OperationsTable;
  idempotency_keys: IdempotencyKeysTable;
  sessions: SessionsTable;
  packs: PacksTable;
  chunks: ChunksTable;
  snapshot_chunks: SnapshotChunksTable;
}

export type AccountRow = Selectable<AccountsTable>;
export type SandboxRow = Selectable<SandboxesTable>;
export type SnapshotRow = Selectable<SnapshotsTable>;
export type OperationRow = Selectable<OperationsTable>;
export type PackRow = Selectable<PacksTable>;
export type ChunkRow = Selectable<ChunksTable>;
export type NewOperation = Insertable<OperationsTable>;
export type OperationPatch = Updateable<OperationsTable>;
