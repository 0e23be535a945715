import type { AppContext } from './context.js';
import { getOperation } from '../catalog/operations.js';
import type { OperationRow } from '../catalog/schema.js';

/** Polls the catalog until the operation finishes or the deadline passes. */
export async function waitForOperation(ctx: AppContext, id: string, timeoutMs: number): Promise<OperationRow> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const op = await getOperation(ctx.db, id);
    if (!op) throw new Error(`operation ${id} vanished`);
    if (op.status !== 'running' || Date.now() > deadline) return op;
    await new Promise((r) => setTimeout(r, 100));
  }
}
