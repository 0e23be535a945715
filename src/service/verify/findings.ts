import type { AppContext } from '../context.js';

/** The checks, by the name a finding carries; tests and operators match on these strings. */
export const CHECKS = [
  'snapshot_object_missing',
  'snapshot_object_size',
  'snapshot_object_sha256',
  'snapshot_chunk_missing',
  'pack_object_missing',
  'pack_object_size',
  'pack_chunk_damaged',
  'orphan_object',
  'orphan_upload',
  'unknown_object',
  'pending_snapshot_without_operation',
  'snapshot_deletion_unfinished',
  'operation_without_workflow',
  'sandbox_processes_stopped',
  'snapshots_per_sandbox_exceeded',
  'account_bytes_exceeded',
] as const;
export type CheckName = (typeof CHECKS)[number];

export interface Finding {
  check: CheckName;
  /** What is inconsistent: a snapshot, operation, sandbox or account id, or an object key. */
  subject: string;
  detail: string;
  /** Whether --repair may fix it: only what is unambiguous is. */
  repairable: boolean;
  /** Set when a repair was attempted: true once fixed, false when the repair failed. */
  repaired?: boolean;
}

export interface VerifyOptions {
  /** Read every ready snapshot's object and compare its sha256 with the catalog, and check every chunk of every live pack. */
  deep?: boolean;
  /** Fix the repairable findings. */
  repair?: boolean;
  /**
   * How old an orphan or a stuck row must be before it counts: younger ones may belong to work in
   * flight (an upload whose row is not yet visible to us, an import still being received).
   */
  graceSeconds?: number;
  /**
   * Only these accounts' catalog rows (tests that share one database). The store is checked whole:
   * each stack has its own.
   */
  accountIds?: string[];
}

export const DEFAULT_GRACE_SECONDS = 15 * 60;

/** What every check receives. */
export interface CheckRun {
  ctx: AppContext;
  deep: boolean;
  graceMs: number;
  accountIds?: string[];
  now: number;
}

/** A finding and, when repairable, how to fix it: the runner decides whether to call it. */
export interface Found extends Omit<Finding, 'repairable' | 'repaired'> {
  repair?: () => Promise<boolean>;
}

export type Check = (run: CheckRun) => Promise<Found[]>;

/** Older than the grace period; an unknown age counts as old only when there is no grace period. */
export const pastGrace = (run: CheckRun, at: Date | undefined) => run.graceMs === 0 || (at !== undefined && run.now - at.getTime() >= run.graceMs);

/** The accounts a query is restricted to, or undefined for all; an empty list matches none. */
export const accountsOf = (run: CheckRun): string[] | undefined =>
  run.accountIds === undefined ? undefined : run.accountIds.length ? run.accountIds : [''];
