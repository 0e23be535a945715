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
  rootDir(id: string): string;
  /** The directory that holds the root, where staging and previous roots are placed beside it. */
  sandboxDir(id: string): string;

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
