import type { FastifyInstance } from 'fastify';
import { operationDto, snapshotDto } from '../dto.js';
import { z } from 'zod';
import type { AppContext } from '../../service/context.js';
import { accountOf } from '../auth.js';
import { idempotent } from '../idempotency.js';
import { sandboxIdParam } from './sandboxes.js';
import { getAccountSandbox, getSnapshotSandbox } from '../../catalog/sandboxes.js';
import { activeReader, getAccountSnapshot, listSandboxSnapshots, reserveSnapshot } from '../../catalog/snapshots.js';
import { submitOperation } from '../../service/operations.js';
import { newSnapshotId, SNAPSHOT_ID_RE } from '../../shared/ids.js';
import { CagedError } from '../../shared/errors.js';

const createBody = z.object({ name: z.string() }).strict();
export const snapshotIdParam = z.object({ id: z.string().regex(SNAPSHOT_ID_RE, 'not a snapshot id') });

export function snapshotRoutes(app: FastifyInstance, ctx: AppContext) {
  app.post(
    '/v1/sandboxes/:id/snapshots',
    idempotent(ctx, async (req) => {
      const { id } = sandboxIdParam.parse(req.params);
      const { name } = createBody.parse(req.body ?? {});
      const sandbox = await getAccountSandbox(ctx.db, accountOf(req).id, id);
      if (sandbox.state === 'creating') throw new CagedError('invalid_state', `sandbox ${id} is still being created`);
      const snapshotId = newSnapshotId();
      // Reserved here so that a taken name or a limit is answered at once with 409/422.
      const { snapshot } = await reserveSnapshot(
        ctx.db,
        { id: snapshotId, accountId: sandbox.account_id, sandboxId: id, name, kind: 'manual' },
        ctx.config.limits,
      );
      const operation = await submitOperation(ctx, sandbox, 'create_snapshot', { sandboxId: id, snapshotId, name, kind: 'manual' }, { snapshotId });
      return { status: 202, body: { snapshot: snapshotDto(snapshot), operation: operationDto(operation) } };
    }),
  );

  app.get('/v1/sandboxes/:id/snapshots', async (req) => {
    const { id } = sandboxIdParam.parse(req.params);
    await getAccountSandbox(ctx.db, accountOf(req).id, id);
    return { snapshots: (await listSandboxSnapshots(ctx.db, id)).map(snapshotDto) };
  });

  app.get('/v1/snapshots/:id', async (req) => {
    const { id } = snapshotIdParam.parse(req.params);
    return snapshotDto(await getAccountSnapshot(ctx.db, accountOf(req).id, id));
  });

  app.delete(
    '/v1/snapshots/:id',
    idempotent(ctx, async (req) => {
      const { id } = snapshotIdParam.parse(req.params);
      const snap = await getAccountSnapshot(ctx.db, accountOf(req).id, id);
      if (snap.state === 'pending') throw new CagedError('invalid_state', `snapshot ${id} is still being created`);
      const reader = await activeReader(ctx.db, id);
      if (reader) throw new CagedError('snapshot_in_use', `snapshot ${id} is being read by ${reader.type} operation ${reader.id}; delete it when that finishes`);
      const sandbox = await getSnapshotSandbox(ctx.db, snap);
      const operation = await submitOperation(ctx, sandbox, 'delete_snapshot', { sandboxId: snap.sandbox_id, snapshotId: id }, { snapshotId: id });
      return { status: 202, body: { operation: operationDto(operation) } };
    }),
  );
}
