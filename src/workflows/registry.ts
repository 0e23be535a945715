import type { OperationRef } from '../shared/definitions.js';
import { createSnapshotWorkflow } from './create-snapshot.js';
import { deleteSnapshotWorkflow } from './delete-snapshot.js';
import { pauseWorkflow } from './pause.js';
import { resumeWorkflow } from './resume.js';
import { deleteSandboxWorkflow } from './delete-sandbox.js';
import { restoreWorkflow } from './restore.js';
import { forkWorkflow } from './fork.js';
import { exportWorkflow } from './export.js';
import { importWorkflow } from './import.js';

/** What an operation moves, which scales its deadline. */
export type Moves = 'nothing' | 'the snapshot it reads' | 'a new snapshot';

interface OperationDef<I extends OperationRef> {
  /** Run as a child of the sandbox workflow, with the operation id as its workflow id. */
  workflow: (input: I) => Promise<unknown>;
  /** The sandbox it acts on: its CagedSandboxId search attribute. */
  sandboxOf: (input: I) => string;
  /** The snapshot it concerns, if any: its CagedSnapshotId search attribute. */
  snapshotOf?: (input: I) => string;
  moves: Moves;
}

const op = <I extends OperationRef>(def: OperationDef<I>) => def;

/**
 * Every operation type, declared once: the request union, the workflow the sandbox workflow runs,
 * the search attributes, the deadline's scale and the replay test's list derive from this table.
 * Adding a type: its workflow file (with its input type), an entry here, its export in index.ts,
 * the route that submits it, and a recorded history.
 */
export const OPERATIONS = {
  create_snapshot: op({ workflow: createSnapshotWorkflow, sandboxOf: (i) => i.sandboxId, snapshotOf: (i) => i.snapshotId, moves: 'a new snapshot' }),
  delete_snapshot: op({ workflow: deleteSnapshotWorkflow, sandboxOf: (i) => i.sandboxId, snapshotOf: (i) => i.snapshotId, moves: 'nothing' }),
  pause: op({ workflow: pauseWorkflow, sandboxOf: (i) => i.sandboxId, moves: 'a new snapshot' }),
  restore: op({ workflow: restoreWorkflow, sandboxOf: (i) => i.targetSandboxId, snapshotOf: (i) => i.snapshotId, moves: 'the snapshot it reads' }),
  fork: op({ workflow: forkWorkflow, sandboxOf: (i) => i.newSandboxId, snapshotOf: (i) => i.snapshotId, moves: 'the snapshot it reads' }),
  export: op({ workflow: exportWorkflow, sandboxOf: (i) => i.sandboxId, snapshotOf: (i) => i.snapshotId, moves: 'the snapshot it reads' }),
  import: op({ workflow: importWorkflow, sandboxOf: (i) => i.sandboxId, snapshotOf: (i) => i.snapshotId, moves: 'a new snapshot' }),
  delete_sandbox: op({ workflow: deleteSandboxWorkflow, sandboxOf: (i) => i.sandboxId, moves: 'nothing' }),
  resume: op({ workflow: resumeWorkflow, sandboxOf: (i) => i.sandboxId, moves: 'nothing' }),
} as const;

export type OperationType = keyof typeof OPERATIONS;
export const OPERATION_TYPES = Object.keys(OPERATIONS) as [OperationType, ...OperationType[]];

/** A request for one operation, as the API submits it to the sandbox workflow. */
export type OperationRequest = { [K in OperationType]: { type: K; input: Parameters<(typeof OPERATIONS)[K]['workflow']>[0] } }[OperationType];

/** The entry of a request's type, typed for its input. */
export function operationOf(req: OperationRequest): OperationDef<OperationRequest['input']> {
  return OPERATIONS[req.type] as unknown as OperationDef<OperationRequest['input']>;
}
