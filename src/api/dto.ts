import type { SandboxRow } from '../catalog/schema.js';

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
