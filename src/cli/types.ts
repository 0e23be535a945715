/** The parts of the API's JSON bodies the CLI reads; extra fields pass through untouched. */

export interface OperationProgress {
  step?: string | null;
  bytes_done?: number | null;
  bytes_total?: number | null;
  /** Set while a step waits to retry a transient storage error. */
  retrying?: { attempt: number; error: string; next_at: string } | null;
}

export interface Operation {
  id: string;
  type: string;
  status: string;
  sandbox_id?: string | null;
  snapshot_id?: string | null;
  created_at?: string;
  progress?: OperationProgress | null;
  error?: { code?: string; message?: string } | null;
  result?: Record<string, unknown> | null;
  [key: string]: unknown;
}

export interface Snapshot {
  id: string;
  name: string;
  size_bytes: number | null;
  created_at: string;
  state?: string;
  kind?: string;
  [key: string]: unknown;
}

export interface Sandbox {
  id: string;
  [key: string]: unknown;
}

export interface ExportResult {
  url: string;
  expires_at: string;
  sha256: string;
  size_bytes: number;
}
