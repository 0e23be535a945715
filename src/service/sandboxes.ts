import type { AppContext } from './context.js';
import { insertSandbox, setSandboxState } from '../catalog/sandboxes.js';
import type { SandboxRow } from '../catalog/schema.js';
import { ensureSandboxWorkflow } from './operations.js';
import { newSandboxId } from '../shared/ids.js';

export interface NewSandbox {
  template?: string;
  cpu?: number;
  memoryMb?: number;
  idleTimeoutSeconds?: number;
}

/**
 * An empty sandbox from a template, running, with its own workflow started. Within the account's
 * sandbox cap (checked under the account's row lock); a half-made sandbox is removed, never left.
 */
export async function createSandbox(ctx: AppContext, accountId: string, spec: NewSandbox): Promise<SandboxRow> {
  const sandbox = await insertSandbox(
    ctx.db,
    {
      id: newSandboxId(),
      accountId,
      template: spec.template ?? 'base',
      cpu: spec.cpu ?? 1,
      memoryMb: spec.memoryMb ?? 1024,
      hostId: ctx.config.hostId,
      idleTimeoutSeconds: spec.idleTimeoutSeconds ?? ctx.config.defaultIdleTimeoutSeconds,
    },
    ctx.config.limits.maxSandboxesPerAccount,
  );
  try {
    await ctx.runtime.create({ id: sandbox.id, template: sandbox.template });
    await setSandboxState(ctx.db, sandbox.id, 'running');
    sandbox.state = 'running';
    await ensureSandboxWorkflow(ctx, sandbox);
  } catch (err) {
    await ctx.runtime.destroy(sandbox.id).catch(() => {});
    await setSandboxState(ctx.db, sandbox.id, 'deleted');
    throw err;
  }
  return sandbox;
}
