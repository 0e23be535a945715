import type { FastifyInstance } from 'fastify';
import { operationDto, sandboxDto, snapshotDto } from '../dto.js';
import { z } from 'zod';
import type { AppContext } from '../../service/context.js';
import { accountOf } from '../auth.js';
import { idempotent } from '../idempotency.js';
import { getAccountSandbox, listSandboxes } from '../../catalog/sandboxes.js';
import { listSessions, recordExecEnd, recordExecStart } from '../../catalog/sessions.js';
import { recordActivity, submitOperation } from '../../service/operations.js';
import { createSandbox } from '../../service/sandboxes.js';
import { forkSandbox } from '../../service/fork.js';
import { waitForOperation } from '../../service/wait.js';
import { SANDBOX_ID_RE } from '../../shared/ids.js';
import { CagedError, isErrorCode } from '../../shared/errors.js';

const createBody = z
  .object({
    template: z.string().regex(/^[a-z0-9-]{1,40}$/, 'template must be 1-40 of a-z 0-9 -').optional(),
    resources: z
      .object({ cpu: z.number().int().min(1).max(64), memory_mb: z.number().int().min(128).max(262_144) })
      .strict()
      .optional(),
    idle_timeout_s: z.number().int().min(0).max(7 * 24 * 3600).optional(),
    from_snapshot: z.string().regex(/^snap-[a-z0-9]{8}$/, 'from_snapshot must be a snapshot id').optional(),
  })
  .strict();

const execBody = z
  .object({
    command: z.array(z.string().max(65_536)).min(1, 'command must have at least one element').max(4096),
    background: z.boolean().optional(),
    timeout_s: z.number().int().min(1).max(3600).optional(),
  })
  .strict();

export const sandboxIdParam = z.object({ id: z.string().regex(SANDBOX_ID_RE, 'not a sandbox id') });

export function sandboxRoutes(app: FastifyInstance, ctx: AppContext) {
  app.post(
    '/v1/sandboxes',
    idempotent(ctx, async (req) => {
      const account = accountOf(req);
      const body = createBody.parse(req.body ?? {});
      if (body.from_snapshot) {
        if (body.template || body.resources) throw new CagedError('invalid_input', 'a fork takes its template and resources from the snapshot; omit template and resources');
        const out = await forkSandbox(ctx, account.id, body.from_snapshot, body.idle_timeout_s);
        return { status: 202, body: { sandbox: sandboxDto(out.sandbox), snapshot: snapshotDto(out.snapshot), operation: operationDto(out.operation) } };
      }
      const sandbox = await createSandbox(ctx, account.id, {
        template: body.template,
        cpu: body.resources?.cpu,
        memoryMb: body.resources?.memory_mb,
        idleTimeoutSeconds: body.idle_timeout_s,
      });
      return { status: 201, body: sandboxDto(sandbox) };
    }),
  );

  app.get('/v1/sandboxes', async (req) => {
    const rows = await listSandboxes(ctx.db, accountOf(req).id);
    return { sandboxes: rows.map(sandboxDto) };
  });

  app.get('/v1/sandboxes/:id', async (req) => {
    const { id } = sandboxIdParam.parse(req.params);
    return sandboxDto(await getAccountSandbox(ctx.db, accountOf(req).id, id));
  });

  app.delete(
    '/v1/sandboxes/:id',
    idempotent(ctx, async (req) => {
      const { id } = sandboxIdParam.parse(req.params);
      const sandbox = await getAccountSandbox(ctx.db, accountOf(req).id, id);
      const operation = await submitOperation(ctx, sandbox, 'delete_sandbox', { sandboxId: id });
      return { status: 202, body: { operation: operationDto(operation) } };
    }),
  );

  app.post(
    '/v1/sandboxes/:id/pause',
    idempotent(ctx, async (req) => {
      const { id } = sandboxIdParam.parse(req.params);
      const sandbox = await getAccountSandbox(ctx.db, accountOf(req).id, id);
      if (sandbox.state === 'creating') throw new CagedError('invalid_state', `sandbox ${id} is still being created`);
      const operation = await submitOperation(ctx, sandbox, 'pause', { sandboxId: id, reason: 'manual' });
      return { status: 202, body: { operation: operationDto(operation) } };
    }),
  );

  app.post('/v1/sandboxes/:id/resume', async (req, reply) => {
    const { id } = sandboxIdParam.parse(req.params);
    const sandbox = await getAccountSandbox(ctx.db, accountOf(req).id, id);
    const operation = await submitOperation(ctx, sandbox, 'resume', { sandboxId: id });
    // Resume waits its turn behind running operations; it answers 200 once done.
    const op = await waitForOperation(ctx, operation.id, 60_000);
    if (op.status === 'running') return reply.status(202).send({ operation: operationDto(op) });
    // The operation's own code (invalid_state, unavailable, …), not a blanket internal error.
    if (op.status !== 'succeeded') throw new CagedError(isErrorCode(op.error_code) ? op.error_code : 'internal', `resume failed: ${op.error_message ?? op.status}`);
    return reply.status(200).send(sandboxDto(await getAccountSandbox(ctx.db, sandbox.account_id, id)));
  });

  app.post('/v1/sandboxes/:id/exec', async (req) => {
    const { id } = sandboxIdParam.parse(req.params);
    const sandbox = await getAccountSandbox(ctx.db, accountOf(req).id, id);
    if (!ctx.config.execEnabled) throw new CagedError('exec_disabled', 'exec is disabled on this server (CAGED_EXEC_ENABLED)');
    const body = execBody.parse(req.body);
    if (sandbox.state !== 'running') throw new CagedError('invalid_state', `sandbox ${id} is ${sandbox.state}; resume it first`);
    await recordActivity(ctx, sandbox);
    const sessionId = await recordExecStart(ctx.db, id, body.command, body.background ?? false);
    const out = await ctx.runtime.exec(id, body.command, { background: body.background ?? false, timeoutMs: (body.timeout_s ?? 300) * 1000 });
    await recordExecEnd(ctx.db, sessionId, 'pid' in out ? { pid: out.pid } : { exitCode: out.exit_code });
    // A long command is activity until it ends.
    await recordActivity(ctx, sandbox);
    return out;
  });

  app.get('/v1/sandboxes/:id/sessions', async (req) => {
    const { id } = sandboxIdParam.parse(req.params);
    await getAccountSandbox(ctx.db, accountOf(req).id, id);
    return { sessions: await listSessions(ctx.db, id) };
  });
}
