import type { Readable } from 'node:stream';

export interface SandboxSpec {
  id: string;
  template: string;
}

export interface ExecResult {
  exit_code: number;
  stdout: string;
  stderr: string;
}

export type ProcessState = 'running' | 'stopped' | 'none';

/**
 * The sandbox-runtime port: what caged needs from the thing it snapshots. The local runtime keeps a
 * sandbox as a directory plus a process group; a container or microVM runtime can implement the same.
 * Every method is idempotent, because activities call them again after a retry.
 */
export interface SandboxRuntime {
  /** Creates the root from the template, unless it exists already. */
  create(spec: SandboxSpec): Promise<void>;
  /** Creates an empty root (for a fork that will be restored into). */
  createEmpty(id: string): Promise<void>;
  exists(id: string): Promise<boolean>;
  /** Stops every process and removes the sandbox's files. */
  destroy(id: string): Promise<void>;

  /** The tree a snapshot records, as a directory this host's worker reads (the caller quiesces the sandbox first). */
  snapshotTree(id: string): string;
  /**
   * A fresh, empty directory on the sandbox's own disk for an operation's temporary files (an
   * upload's spool), removed with the sandbox; whatever an earlier attempt left there is removed.
   */
  scratchDir(id: string, name: string): Promise<string>;
  removeScratch(id: string, name: string): Promise<void>;

  /*
   * Replacing a sandbox's tree (restore, fork). The new tree is built in a staging directory while
   * the sandbox runs; swapIn makes it the tree (the previous one is kept), rollbackSwap puts the
   * previous one back, retireSwap makes the swap final and removeRetired deletes the previous tree.
   * Each step is idempotent and resumes after a crash between its own renames.
   */
  /** A fresh, empty staging directory for the operation (whatever an earlier attempt left is removed). */
  prepareStaging(id: string, operationId: string): Promise<string>;
  discardStaging(id: string, operationId: string): Promise<void>;
  swapIn(id: string, operationId: string): Promise<void>;
  rollbackSwap(id: string, operationId: string): Promise<void>;
  retireSwap(id: string, operationId: string): Promise<void>;
  removeRetired(id: string, operationId: string): Promise<void>;

  /** Stops the process group (SIGSTOP). */
  pause(id: string): Promise<void>;
  /** Continues the process group (SIGCONT). */
  resume(id: string): Promise<void>;
  /** pause + flush the tree to disk, so that a snapshot sees every acknowledged write. */
  quiesce(id: string): Promise<void>;
  processState(id: string): Promise<ProcessState>;

  exec(id: string, command: string[], opts: { background: boolean; timeoutMs?: number; signal?: AbortSignal }): Promise<ExecResult | { pid: number }>;

  /** Paths are relative to the root and must stay inside it (CagedError invalid_input otherwise). */
  writeFile(id: string, relPath: string, body: Readable): Promise<void>;
  readFile(id: string, relPath: string): Promise<Readable>;
  deleteFile(id: string, relPath: string): Promise<void>;
}
