import type { OperationRow, SandboxRow, SnapshotRow } from '../catalog/schema.js';

/** The API's JSON shapes of catalog rows: every response maps rows here, and only here. */
const num = (v: unknown) => (v === null || v === undefined ? 0 : Number(v));

export function sandboxDto(s: SandboxRow) {
  return {
    id: s.id,
    template: s.template,
    resources: { cpu: s.cpu, memory_mb: s.memory_mb },
    state: s.state,
    created_at: s.created_at.toISOString(),
    last_active_at: s.last_active_at.toISOString(),
    idle_timeout_s: s.idle_timeout_s,
  };
}

export function operationDto(o: OperationRow) {
  return {
    id: o.id,
    type: o.type,
    status: o.status,
    sandbox_id: o.sandbox_id,
    snapshot_id: o.snapshot_id,
    progress: {
      step: o.step,
      bytes_done: Number(o.bytes_done),
      ...(o.bytes_total === null ? {} : { bytes_total: Number(o.bytes_total) }),
      // Only a running operation is retrying; a finished one's error says how it ended.
      ...(o.status === 'running' && o.retrying ? { retrying: o.retrying } : {}),
    },
    ...(o.result === null ? {} : { result: o.result }),
    ...(o.error_code ? { error: { code: o.error_code, message: o.error_message ?? '' } } : {}),
    created_at: o.created_at.toISOString(),
    ...(o.finished_at ? { finished_at: o.finished_at.toISOString() } : {}),
  };
}

export function snapshotDto(s: SnapshotRow) {
  return {
    id: s.id,
    sandbox_id: s.sandbox_id,
    name: s.name,
    kind: s.kind,
    state: s.state,
    size_bytes: s.state === 'ready' || s.state === 'deleting' ? num(s.size_bytes) : s.size_bytes === null ? null : num(s.size_bytes),
    sha256: s.sha256,
    // A chunked snapshot: what it added to the store (new chunks and its manifest), and the snapshot it was compared with.
    ...(s.format === 'chunks' && s.stored_bytes !== null ? { stored_bytes: num(s.stored_bytes) + num(s.manifest_bytes), incremental_from: s.parent_id } : {}),
    created_at: s.created_at.toISOString(),
    ...(s.error_code ? { error: { code: s.error_code, message: s.error_message ?? '' } } : {}),
  };
}
