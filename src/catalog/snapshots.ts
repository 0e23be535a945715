import { sql } from 'kysely';
import type { CatalogDb } from './db.js';
import type { SnapshotKind, SnapshotRow, SnapshotState } from './schema.js';
import type { Limits } from '../config.js';
import { CagedError } from '../shared/errors.js';
import { accountStoredBytes, dropSnapshotRefs } from './chunk-store.js';
import { layout } from '../storage/layout.js';

export const SNAPSHOT_NAME_RE = /^[A-Za-z0-9._-]{1,63}$/;
const LIVE: SnapshotState[] = ['pending', 'ready', 'deleting'];
/** Operation types that read a snapshot while they run. */
const READERS = ['restore', 'fork', 'export'] as const;

export interface Reservation {
  id: string;
  accountId: string;
  sandboxId: string;
  name: string;
  kind: SnapshotKind;
  /**
   * At the limit, take the auto snapshot this one replaces out of use now (state deleting), so the
   * limit holds at every moment and no reader can claim it; releaseReplacedSnapshot undoes that.
   */
  holdReplaced?: boolean;
}

export interface ReserveOutcome {
  snapshot: SnapshotRow;
  /** An auto snapshot that makes room for this one: the caller deletes it once this one is ready. */
  replaces?: string;
}

/** Where a new snapshot's data goes: the catalog decides, every layer reads it from the row. */
/** New snapshots are chunked: their key is the manifest's. */
export const newSnapshotObjectKey = (sandboxId: string, snapshotId: string) => layout.manifest(sandboxId, snapshotId);

const num = (v: unknown) => (v === null || v === undefined ? 0 : Number(v));

/** Bytes an account holds or is writing (pending snapshots with what they wrote so far), as accountStoredBytes counts them. */
export async function accountUsage(db: CatalogDb, accountId: string, excludeSnapshotId?: string): Promise<number> {
  return accountStoredBytes(db, accountId, { excludeSnapshot: excludeSnapshotId });
}

/**
 * Reserves a pending snapshot row after checking the name and the limits. Idempotent by id, so a
 * retried activity gets the same row. At the per-sandbox limit, an auto snapshot may replace the
 * oldest auto snapshot; a manual one is refused.
 */
export async function reserveSnapshot(db: CatalogDb, r: Reservation, limits: Limits): Promise<ReserveOutcome> {
  if (!SNAPSHOT_NAME_RE.test(r.name)) {
    throw new CagedError('invalid_input', 'snapshot name must be 1-63 characters of A-Z a-z 0-9 . _ -');
  }
  return db.transaction().execute(async (tx) => {
    // Serialises reservations of one sandbox, so two of them cannot both take the last slot.
    const sandbox = await tx.selectFrom('sandboxes').select(['id', 'state']).where('id', '=', r.sandboxId).forUpdate().executeTakeFirst();
    if (!sandbox || sandbox.state === 'deleted') throw new CagedError('not_found', `sandbox ${r.sandboxId} not found`);

    const existing = await tx.selectFrom('snapshots').selectAll().where('id', '=', r.id).executeTakeFirst();
    if (existing) {
      return { snapshot: existing };
    }
    const clash = await tx
      .selectFrom('snapshots')
      .select('id')
      .where('sandbox_id', '=', r.sandboxId)
      .where('name', '=', r.name)
      .where('state', 'in', LIVE)
      .executeTakeFirst();
    if (clash) throw new CagedError('name_taken', `sandbox ${r.sandboxId} already has a snapshot named ${r.name} (${clash.id})`);

    // Snapshots on their way out (deleting) no longer count: they cannot be read or restored.
    const counted = await tx
      .selectFrom('snapshots')
      .select(['id', 'kind', 'state'])
      .where('sandbox_id', '=', r.sandboxId)
      .where('state', 'in', ['pending', 'ready'])
      .orderBy('seq', 'asc')
      .execute();
    let replaces: string | undefined;
    if (counted.length >= limits.maxSnapshotsPerSandbox) {
      const oldestAuto = r.kind === 'auto' && counted.length === limits.maxSnapshotsPerSandbox ? await replaceableAuto(tx, r.sandboxId, limits.urlExpirySeconds) : undefined;
      if (!oldestAuto) {
        throw new CagedError(
          'limit_exceeded',
          `limit snapshots_per_sandbox exceeded: sandbox ${r.sandboxId} has ${counted.length} of ${limits.maxSnapshotsPerSandbox} snapshots` +
            (r.kind === 'auto' ? ' and no auto snapshot to replace (auto snapshots being read are kept)' : ''),
          { limit: 'snapshots_per_sandbox', max: limits.maxSnapshotsPerSandbox },
        );
      }
      replaces = oldestAuto;
      if (r.holdReplaced) {
        await tx.updateTable('snapshots').set({ state: 'deleting', updated_at: sql`now()` }).where('id', '=', replaces).execute();
      }
    }
    const used = await accountUsage(tx as unknown as CatalogDb, r.accountId);
    if (used >= limits.maxAccountBytes) {
      throw new CagedError('limit_exceeded', `limit account_bytes exceeded: the account stores ${used} of ${limits.maxAccountBytes} bytes`, {
        limit: 'account_bytes',
        max: limits.maxAccountBytes,
      });
    }
    const snapshot = await tx
      .insertInto('snapshots')
      .values({
        id: r.id,
        account_id: r.accountId,
        sandbox_id: r.sandboxId,
        name: r.name,
        kind: r.kind,
        state: 'pending',
        object_key: newSnapshotObjectKey(r.sandboxId, r.id),
        format: 'chunks',
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return { snapshot, replaces };
  });
}

/**
 * The oldest ready auto snapshot of the sandbox that nothing reads: no running restore, fork or
 * export, and no export whose download URL may still be in use (handed out within the URL's
 * lifetime: replacing the snapshot would delete the archive behind it). Locked: a reader claims
 * under the same row lock (claimSnapshotForRead), so it either registered before this look (and
 * the snapshot is skipped) or finds the snapshot deleting.
 */
async function replaceableAuto(tx: CatalogDb, sandboxId: string, urlExpirySeconds: number): Promise<string | undefined> {
  const row = await tx
    .selectFrom('snapshots as s')
    .select('s.id')
    .where('s.sandbox_id', '=', sandboxId)
    .where('s.kind', '=', 'auto')
    .where('s.state', '=', 'ready')
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('operations as o')
            .select('o.id')
            .whereRef('o.snapshot_id', '=', 's.id')
            .where('o.type', 'in', READERS)
            .where((w) =>
              w.or([
                w('o.status', '=', 'running'),
                w.and([w('o.type', '=', 'export'), w('o.status', '=', 'succeeded'), w('o.finished_at', '>', sql<Date>`now() - make_interval(secs => ${urlExpirySeconds})`)]),
              ]),
            ),
        ),
      ),
    )
    .orderBy('s.seq', 'asc')
    .limit(1)
    .forUpdate()
    .executeTakeFirst();
  return row?.id;
}

/** Undoes holdReplaced when the snapshot that was to replace it failed; its object was never touched. */
export async function releaseReplacedSnapshot(db: CatalogDb, id: string): Promise<void> {
  await db.updateTable('snapshots').set({ state: 'ready', updated_at: sql`now()` }).where('id', '=', id).where('state', '=', 'deleting').execute();
}

export async function getSnapshot(db: CatalogDb, id: string): Promise<SnapshotRow | undefined> {
  return db.selectFrom('snapshots').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function getAccountSnapshot(db: CatalogDb, accountId: string, id: string): Promise<SnapshotRow> {
  const row = await getSnapshot(db, id);
  if (!row || row.account_id !== accountId || row.state === 'deleted') throw new CagedError('not_found', `snapshot ${id} not found`);
  return row;
}

export async function listSandboxSnapshots(db: CatalogDb, sandboxId: string): Promise<SnapshotRow[]> {
  return db
    .selectFrom('snapshots')
    .selectAll()
    .where('sandbox_id', '=', sandboxId)
    .where('state', '!=', 'deleted')
    .orderBy('seq', 'desc')
    .execute();
}

export async function setSnapshotProgress(db: CatalogDb, id: string, bytes: number): Promise<void> {
  await db.updateTable('snapshots').set({ size_bytes: bytes, updated_at: sql`now()` }).where('id', '=', id).where('state', '=', 'pending').execute();
}

/** Records the logical size (bytes of the files the tree expands to) of a snapshot still pending. */
export async function setSnapshotTreeBytes(db: CatalogDb, id: string, treeBytes: number): Promise<void> {
  await db.updateTable('snapshots').set({ tree_bytes: treeBytes }).where('id', '=', id).where('state', '=', 'pending').execute();
}

/**
 * pending → ready: the commit point of a snapshot. Under the account's row lock the bytes of the
 * account's other ready snapshots plus this one must fit the account limit, so concurrent
 * snapshots of several sandboxes cannot together pass it (each checked only its own stream).
 * Idempotent: a retry after the commit finds it ready.
 */
export async function markSnapshotReady(db: CatalogDb, id: string, sizeBytes: number, sha256: string, limits?: Pick<Limits, 'maxAccountBytes'>): Promise<SnapshotRow> {
  return db.transaction().execute(async (tx) => {
    const snap = await tx.selectFrom('snapshots').selectAll().where('id', '=', id).executeTakeFirst();
    if (!snap || (snap.state !== 'pending' && snap.state !== 'ready')) throw new CagedError('invalid_state', `snapshot ${id} is no longer pending`);
    if (snap.state === 'ready') return snap;
    if (limits) {
      await tx.selectFrom('accounts').select('id').where('id', '=', snap.account_id).forUpdate().execute();
      // A chunked snapshot's packs are among what the account stores (committedFor counts them); its
      // manifest, or an archive, is what it adds besides.
      const stored = await accountStoredBytes(tx as unknown as CatalogDb, snap.account_id, { committedFor: id });
      const adds = snap.format === 'chunks' ? num(snap.manifest_bytes) : sizeBytes;
      if (stored + adds > limits.maxAccountBytes) {
        throw new CagedError(
          'limit_exceeded',
          `limit account_bytes exceeded: the account stores ${stored} bytes and this snapshot adds ${adds} of ${limits.maxAccountBytes}`,
          { limit: 'account_bytes', max: limits.maxAccountBytes },
        );
      }
    }
    return tx
      .updateTable('snapshots')
      .set({ state: 'ready', size_bytes: sizeBytes, sha256, updated_at: sql`now()`, error_code: null, error_message: null })
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirstOrThrow();
  });
}

export async function markSnapshotFailed(db: CatalogDb, id: string, code: string, message: string): Promise<void> {
  await db.transaction().execute(async (tx) => {
    const res = await tx
      .updateTable('snapshots')
      .set({ state: 'failed', error_code: code, error_message: message, size_bytes: null, updated_at: sql`now()` })
      .where('id', '=', id)
      .where('state', 'in', ['pending', 'failed'])
      .executeTakeFirst();
    // A failed snapshot keeps no chunk alive; the collector frees what only it referenced.
    if (Number(res.numUpdatedRows) > 0) await dropSnapshotRefs(tx as unknown as CatalogDb, id);
  });
}

/**
 * ready → deleting, refused while an operation still reads the snapshot. The row lock orders this
 * against a reader's claim (claimSnapshotForRead).
 */
export async function markSnapshotDeleting(db: CatalogDb, id: string, byOperationId: string): Promise<SnapshotRow> {
  return db.transaction().execute(async (tx) => {
    const snap = await tx.selectFrom('snapshots').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
    if (!snap) throw new CagedError('not_found', `snapshot ${id} not found`);
    if (snap.state === 'deleting' || snap.state === 'deleted') return snap;
    if (snap.state === 'pending') throw new CagedError('invalid_state', `snapshot ${id} is still being created`);
    const reader = await tx
      .selectFrom('operations')
      .select(['id', 'type'])
      .where('snapshot_id', '=', id)
      .where('status', '=', 'running')
      .where('type', 'in', READERS)
      .where('id', '!=', byOperationId)
      .executeTakeFirst();
    if (reader) throw new CagedError('snapshot_in_use', `snapshot ${id} is being read by ${reader.type} operation ${reader.id}`);
    return tx
      .updateTable('snapshots')
      .set({ state: 'deleting', updated_at: sql`now()` })
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirstOrThrow();
  });
}

/** A reader (restore, fork, export) checks under the row lock that the snapshot is still ready. */
export async function claimSnapshotForRead(db: CatalogDb, id: string): Promise<SnapshotRow> {
  return db.transaction().execute(async (tx) => {
    const snap = await tx.selectFrom('snapshots').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
    if (!snap || snap.state === 'deleted') throw new CagedError('not_found', `snapshot ${id} not found`);
    return assertReady(snap);
  });
}

export async function markSnapshotDeleted(db: CatalogDb, id: string): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await tx.updateTable('snapshots').set({ state: 'deleted', updated_at: sql`now()` }).where('id', '=', id).execute();
    await dropSnapshotRefs(tx as unknown as CatalogDb, id);
  });
}


/** A refused import leaves nothing behind, not even a failed row. */
export async function discardReservation(db: CatalogDb, id: string): Promise<void> {
  await db.deleteFrom('snapshots').where('id', '=', id).where('state', '=', 'pending').execute();
}

/** The running operation that reads this snapshot, if any (restore, fork, export). */
export async function activeReader(db: CatalogDb, snapshotId: string): Promise<{ id: string; type: string } | undefined> {
  return db
    .selectFrom('operations')
    .select(['id', 'type'])
    .where('snapshot_id', '=', snapshotId)
    .where('status', '=', 'running')
    .where('type', 'in', READERS)
    .executeTakeFirst();
}

/** Restore, fork and export read only snapshots that are ready. */
export function assertReady(snap: SnapshotRow): SnapshotRow {
  if (snap.state !== 'ready') throw new CagedError('invalid_state', `snapshot ${snap.id} is ${snap.state}, not ready`);
  return snap;
}
