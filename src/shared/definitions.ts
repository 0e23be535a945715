/**
 * Definitions shared by the API, the workers and the workflows: task queues, search attributes,
 * signals, queries and the inputs of every workflow. Imported by workflow code, so it must stay
 * deterministic and free of Node built-ins.
 */
import { defineQuery, defineSignal } from '@temporalio/workflow';

export const SEARCH_ATTRIBUTES = {
  sandboxId: 'CagedSandboxId',
  snapshotId: 'CagedSnapshotId',
  accountId: 'CagedAccountId',
  operationType: 'CagedOperationType',
} as const;

/** Activities that touch a sandbox's disk or processes run on the queue of the host that has it. */
export const hostTaskQueue = (sharedQueue: string, hostId: string) => `${sharedQueue}-host-${hostId}`;

export type { OperationRequest, OperationType } from '../workflows/registry.js';
import type { OperationRequest } from '../workflows/registry.js';

export const sandboxWorkflowId = (sandboxId: string) => `sandbox-${sandboxId}`;

export interface OperationRef {
  operationId: string;
  accountId: string;
  /** The queue for activities on the sandbox's host. */
  hostQueue: string;
  /** Past this the operation is cancelled, rolled back and fails with deadline_exceeded; set by the API from its size. */
  deadlineSeconds?: number;
}

export interface CreateSnapshotInput extends OperationRef {
  sandboxId: string;
  snapshotId: string;
  name: string;
  kind: 'manual' | 'auto';
  /** Set by pause: the sandbox was stopped by the caller and must stay stopped. */
  keepPaused?: boolean;
}

export interface DeleteSnapshotInput extends OperationRef {
  sandboxId: string;
  snapshotId: string;
}

export interface PauseInput extends OperationRef {
  sandboxId: string;
  reason: 'manual' | 'idle_timeout' | 'external_idle_timeout';
}

export interface RestoreInput extends OperationRef {
  snapshotId: string;
  /** Sandbox the snapshot is read from. */
  sourceSandboxId: string;
  targetSandboxId: string;
}

export interface ForkInput extends OperationRef {
  snapshotId: string;
  sourceSandboxId: string;
  newSandboxId: string;
}

export interface ExportInput extends OperationRef {
  snapshotId: string;
  sandboxId: string;
}

export interface ImportInput extends OperationRef {
  sandboxId: string;
  snapshotId: string;
  name: string;
  stagingKey: string;
}

export interface DeleteSandboxInput extends OperationRef {
  sandboxId: string;
}

export interface ResumeInput extends OperationRef {
  sandboxId: string;
}

/** State of the long-lived workflow that owns one sandbox: it runs its operations one at a time. */
export interface SandboxWorkflowInput {
  sandboxId: string;
  accountId: string;
  hostQueue: string;
  idleTimeoutSeconds: number;
  paused: boolean;
  /** The sandbox is gone; the workflow only drains operations on its snapshots, then ends. */
  deleted?: boolean;
  queue?: OperationRequest[];
  /** Last activity, epoch ms, as recorded by the touch signal. */
  lastActiveAt?: number;
  /** The deadline of the pauses this workflow starts itself when the sandbox is idle. */
  pauseDeadlineSeconds?: number;
}

export const submitOperationSignal = defineSignal<[OperationRequest]>('submitOperation');
export const cancelOperationSignal = defineSignal<[string]>('cancelOperation');
/** Activity on the sandbox (files, exec, resume): restarts the idle clock. */
export const touchSignal = defineSignal<[{ at: number }]>('touch');
export const sandboxStatusQuery = defineQuery<{ running?: string; queued: string[]; paused: boolean }>('status');

export interface SnapshotResult {
  snapshot_id: string;
  size_bytes: number;
  sha256: string;
}

export interface ProgressUpdate {
  step: string;
  bytesDone?: number;
  bytesTotal?: number | null;
}
