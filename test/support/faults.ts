import type { ActivityDeps } from '../../src/activities/deps.js';

/** What an activity tells a fault hook: the point it reached, and whose work it is doing. */
export type FaultHook = NonNullable<ActivityDeps['faultHook']>;

/**
 * Faults armed per sandbox id or snapshot id. Pass `hook` to startStack once; each test arms only
 * ids it owns, so tests sharing a stack do not interfere. A call reaches the fault armed on its
 * sandbox, then the one armed on its snapshot.
 */
export function faultRegistry() {
  const armed = new Map<string, FaultHook>();
  const hook: FaultHook = async (point, info) => {
    for (const id of [info.sandboxId, info.snapshotId]) {
      const fault = id ? armed.get(id) : undefined;
      if (fault) await fault(point, info);
    }
  };
  return {
    hook,
    arm: (id: string, fault: FaultHook) => void armed.set(id, fault),
    disarm: (id: string) => void armed.delete(id),
    /** Arms a fault on `id` that holds every call at `point` until the gate it returns is opened. */
    hold(id: string, point: string) {
      const held = gate();
      armed.set(id, async (p) => {
        if (p !== point) return;
        held.reached();
        await held.opened;
      });
      return held;
    },
  };
}

/** A gate a fault hook waits on (`reached()`, then `await opened`), and a promise that says the hook was reached. */
function gate() {
  let open!: () => void;
  let reached!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  const wasReached = new Promise<void>((r) => (reached = r));
  return { open, opened, reached, wasReached };
}
