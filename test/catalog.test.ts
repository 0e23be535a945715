import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { sql } from 'kysely';
import { migrateToLatest, openCatalog, type CatalogDb } from '../src/catalog/db.js';
import { createAccount, ensureAccountWithKey, findAccountByKey } from '../src/catalog/accounts.js';
import { insertSandbox } from '../src/catalog/sandboxes.js';
import {
  accountUsage,
  claimSnapshotForRead,
  getSnapshot,
  markSnapshotDeleted,
  markSnapshotDeleting,
  markSnapshotFailed,
  markSnapshotReady,
  reserveSnapshot,
  setSnapshotProgress,
} from '../src/catalog/snapshots.js';
import { finishOperation, getOperation, insertOperation, listOperations, setOperationProgress } from '../src/catalog/operations.js';
import { operationDto } from '../src/api/dto.js';
import { claimIdempotencyKey, completeIdempotencyKey, releaseIdempotencyKey } from '../src/catalog/idempotency.js';
import { migrations } from '../src/catalog/migrations/index.js';
import { insertPack, newPackId } from '../src/catalog/chunk-store.js';
import { loadConfig, type Limits } from '../src/config.js';
import type { SnapshotKind } from '../src/catalog/schema.js';
import { CagedError } from '../src/shared/errors.js';
import { hashSecret, newOperationId, newSandboxId, newSnapshotId, randomSuffix } from '../src/shared/ids.js';

// The defaults of the configuration, whatever limits it grows; each test sets the ones it exercises.
const LIMITS: Limits = { ...loadConfig({}).limits, maxSnapshotsPerSandbox: 20, maxAccountBytes: 10 * 1024 ** 3 };
const limits = (l: Partial<Limits>): Limits => ({ ...LIMITS, ...l });

/** Asserts a CagedError with exactly this code (and details, when given). */
async function expectCaged(p: Promise<unknown>, code: string, details?: Record<string, unknown>): Promise<CagedError> {
  const err = await p.then(
    (v) => {
      throw new Error(`expected ${code}, but it resolved with ${JSON.stringify(v)}`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CagedError);
  const ce = err as CagedError;
  expect(ce.code).toBe(code);
  if (details) expect(ce.details).toEqual(details);
  return ce;
}

/**
 * The same suite on both catalog engines. The PostgreSQL database is shared with every other test
 * file of the run, so everything here works with fresh ids and never assumes an empty table.
 */
function catalogSuite(engine: string, open: () => Promise<CatalogDb>) {
  describe(`catalog on ${engine}`, () => {
    let db: CatalogDb;
    beforeAll(async () => {
      db = await open();
    });
    afterAll(async () => {
      await db?.destroy();
    });

    async function account() {
      return (await createAccount(db, `catalog-test-${randomSuffix(6)}`)).account;
    }
    async function sandbox(accountId: string) {
      return insertSandbox(db, {
        id: newSandboxId(),
        accountId,
        template: 'base',
        cpu: 1,
        memoryMb: 1024,
        hostId: 'testhost',
        idleTimeoutSeconds: 300,
        state: 'running',
      });
    }
    async function reserve(accountId: string, sandboxId: string, name: string, kind: SnapshotKind = 'manual', l: Limits = LIMITS, id = newSnapshotId()) {
      return reserveSnapshot(db, { id, accountId, sandboxId, name, kind}, l);
    }
    /** A reserved snapshot taken to ready. */
    async function ready(accountId: string, sandboxId: string, name: string, kind: SnapshotKind = 'manual', l: Limits = LIMITS) {
      const { snapshot } = await reserve(accountId, sandboxId, name, kind, l);
      await markSnapshotReady(db, snapshot.id, 10, 'a'.repeat(64));
      return snapshot.id;
    }
    async function runningOp(accountId: string, type: string, refs: { sandboxId?: string; snapshotId?: string } = {}) {
      return insertOperation(db, { id: newOperationId(type), accountId, type, sandboxId: refs.sandboxId, snapshotId: refs.snapshotId, input: { type } });
    }

    describe('migrations', () => {
      it('migrateToLatest is idempotent and records 0001_initial once', async () => {
        const again = await migrateToLatest(db);
        expect(again.error).toBeUndefined();
        expect(again.results).toEqual([]);
        const rows = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(db);
        expect(rows.rows.map((r) => r.name)).toEqual(Object.keys(migrations).sort());
        expect(rows.rows.map((r) => r.name)).toContain('0001_initial');
        // A third run on top of the second still finds nothing to do.
        expect((await migrateToLatest(db)).results).toEqual([]);
      });

      it('creates every table the catalog uses', async () => {
        for (const table of ['accounts', 'sandboxes', 'snapshots', 'operations', 'idempotency_keys', 'sessions'] as const) {
          const r = await sql<{ n: string | number }>`select count(*) as n from ${sql.table(table)}`.execute(db);
          expect(Number(r.rows[0]!.n)).toBeGreaterThanOrEqual(0);
        }
      });
    });

    describe('accounts', () => {
      it('stores the key hashed and finds the account by the key', async () => {
        const { account, apiKey } = await createAccount(db, 'alice');
        expect(apiKey).toMatch(/^caged_sk_[A-Za-z0-9_-]{16,}$/);
        expect(account.id).toMatch(/^acct-[a-z0-9]{8}$/);
        expect(account.name).toBe('alice');

        const stored = await db.selectFrom('accounts').select('api_key_hash').where('id', '=', account.id).executeTakeFirstOrThrow();
        expect(stored.api_key_hash).not.toBe(apiKey);
        expect(stored.api_key_hash).not.toContain(apiKey.slice('caged_sk_'.length));
        expect(stored.api_key_hash).toBe(hashSecret(apiKey));
        expect(stored.api_key_hash).toMatch(/^[0-9a-f]{64}$/);

        expect((await findAccountByKey(db, apiKey))?.id).toBe(account.id);
        expect(await findAccountByKey(db, `${apiKey}x`)).toBeUndefined();
        expect(await findAccountByKey(db, stored.api_key_hash)).toBeUndefined();
      });

      it('ensureAccountWithKey creates the account once', async () => {
        const key = `caged_sk_${randomSuffix(24)}`;
        const first = await ensureAccountWithKey(db, 'development', key);
        const second = await ensureAccountWithKey(db, 'development', key);
        expect(second.id).toBe(first.id);
        const n = await db.selectFrom('accounts').select('id').where('api_key_hash', '=', hashSecret(key)).execute();
        expect(n).toHaveLength(1);
      });
    });

    describe('sandboxes per account', () => {
      const spec = (accountId: string, id = newSandboxId()) => ({ id, accountId, template: 'base', cpu: 1, memoryMb: 1024, hostId: 'testhost', idleTimeoutSeconds: 300 });

      it('concurrent inserts stop at the cap; deleted sandboxes do not count; a repeated id is not a second sandbox', async () => {
        const acct = await account();
        const results = await Promise.allSettled(Array.from({ length: 10 }, () => insertSandbox(db, spec(acct.id), 4)));
        const ok = results.filter((r): r is PromiseFulfilledResult<Awaited<ReturnType<typeof insertSandbox>>> => r.status === 'fulfilled');
        expect(ok).toHaveLength(4);
        for (const r of results.filter((x) => x.status === 'rejected')) {
          expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'limit_exceeded', details: { limit: 'sandboxes_per_account', max: 4 } });
        }
        const live = await db.selectFrom('sandboxes').select('id').where('account_id', '=', acct.id).execute();
        expect(live).toHaveLength(4);
        // The same id again returns the row it already has, even at the cap.
        expect((await insertSandbox(db, spec(acct.id, ok[0]!.value.id), 4)).id).toBe(ok[0]!.value.id);
        await db.updateTable('sandboxes').set({ state: 'deleted' }).where('id', '=', ok[1]!.value.id).execute();
        expect((await insertSandbox(db, spec(acct.id), 4)).state).toBe('creating');
        await expectCaged(insertSandbox(db, spec(acct.id), 4), 'limit_exceeded', { limit: 'sandboxes_per_account', max: 4 });
        // Another account has its own count.
        expect((await insertSandbox(db, spec((await account()).id), 4)).state).toBe('creating');
      });
    });

    describe('reserveSnapshot', () => {
      it('validates the name', async () => {
        const a = await account();
        const s = await sandbox(a.id);
        for (const bad of ['', 'has space', 'a/b', 'x'.repeat(64), 'ünïcode', 'semi;colon', '..\u0000']) {
          await expectCaged(reserve(a.id, s.id, bad), 'invalid_input');
        }
        const none = await db.selectFrom('snapshots').select('id').where('sandbox_id', '=', s.id).execute();
        expect(none).toEqual([]);
        for (const good of ['x'.repeat(63), 'A.b_c-9', '.', '-']) {
          const { snapshot } = await reserve(a.id, s.id, good);
          expect(snapshot).toMatchObject({ name: good, state: 'pending', kind: 'manual', sandbox_id: s.id, account_id: a.id });
        }
      });

      it('refuses an unknown or deleted sandbox', async () => {
        const a = await account();
        await expectCaged(reserve(a.id, newSandboxId(), 'n'), 'not_found');
        const s = await sandbox(a.id);
        await db.updateTable('sandboxes').set({ state: 'deleted' }).where('id', '=', s.id).execute();
        await expectCaged(reserve(a.id, s.id, 'n'), 'not_found');
      });

      it('refuses a name that a live snapshot of the sandbox has; failed and deleted ones free it', async () => {
        const a = await account();
        const s = await sandbox(a.id);
        const other = await sandbox(a.id);

        const { snapshot: pending } = await reserve(a.id, s.id, 'dup');
        await expectCaged(reserve(a.id, s.id, 'dup'), 'name_taken');
        // The same name in another sandbox is fine.
        await reserve(a.id, other.id, 'dup');

        await markSnapshotReady(db, pending.id, 5, 'b'.repeat(64));
        await expectCaged(reserve(a.id, s.id, 'dup'), 'name_taken');
        await markSnapshotDeleting(db, pending.id, newOperationId('delete-snapshot'));
        await expectCaged(reserve(a.id, s.id, 'dup'), 'name_taken');
        await markSnapshotDeleted(db, pending.id);
        const { snapshot: again } = await reserve(a.id, s.id, 'dup');
        expect(again.id).not.toBe(pending.id);

        await markSnapshotFailed(db, again.id, 'boom', 'it broke');
        const { snapshot: third } = await reserve(a.id, s.id, 'dup');
        expect(third.state).toBe('pending');

        const rows = await db.selectFrom('snapshots').select(['id', 'state']).where('sandbox_id', '=', s.id).where('name', '=', 'dup').orderBy('created_at').execute();
        expect(rows).toEqual([
          { id: pending.id, state: 'deleted' },
          { id: again.id, state: 'failed' },
          { id: third.id, state: 'pending' },
        ]);
      });

      it('is idempotent by id', async () => {
        const a = await account();
        const s = await sandbox(a.id);
        const id = newSnapshotId();
        const first = await reserve(a.id, s.id, 'once', 'manual', LIMITS, id);
        const second = await reserve(a.id, s.id, 'once', 'manual', LIMITS, id);
        expect(second.snapshot).toEqual(first.snapshot);
        expect(second.replaces).toBeUndefined();
        const rows = await db.selectFrom('snapshots').select('id').where('sandbox_id', '=', s.id).execute();
        expect(rows).toEqual([{ id }]);
      });

      it('refuses a manual snapshot at the per-sandbox limit; failed ones do not count', async () => {
        const a = await account();
        const s = await sandbox(a.id);
        const l = limits({ maxSnapshotsPerSandbox: 2 });
        await ready(a.id, s.id, 'auto-1', 'auto', l);
        const failed = (await reserve(a.id, s.id, 'failed', 'manual', l)).snapshot.id;
        await markSnapshotFailed(db, failed, 'boom', 'x');
        await reserve(a.id, s.id, 'm-1', 'manual', l);
        // At the limit: a manual snapshot never replaces an auto one.
        const err = await expectCaged(reserve(a.id, s.id, 'm-2', 'manual', l), 'limit_exceeded', { limit: 'snapshots_per_sandbox', max: 2 });
        expect(err.status).toBe(422);
        expect(err.message).toContain('snapshots_per_sandbox');
        // Another sandbox of the account has its own count.
        const s2 = await sandbox(a.id);
        await reserve(a.id, s2.id, 'm-2', 'manual', l);
      });

      it('lets an auto snapshot at the limit replace the oldest ready auto snapshot', async () => {
        const a = await account();
        const s = await sandbox(a.id);
        const l = limits({ maxSnapshotsPerSandbox: 4 });
        // The oldest auto snapshot is still pending: it cannot be replaced, the next ready one is.
        const pendingAuto = (await reserve(a.id, s.id, 'auto-pending', 'auto', l)).snapshot.id;
        const oldestReady = await ready(a.id, s.id, 'auto-a', 'auto', l);
        await ready(a.id, s.id, 'manual-a', 'manual', l);
        await ready(a.id, s.id, 'auto-b', 'auto', l);

        const out = await reserve(a.id, s.id, 'auto-c', 'auto', l);
        expect(out.replaces).toBe(oldestReady);
        expect(out.replaces).not.toBe(pendingAuto);
        expect(out.snapshot).toMatchObject({ name: 'auto-c', kind: 'auto', state: 'pending' });
        // The replaced snapshot is left to the caller; the catalog does not touch it.
        expect((await getSnapshot(db, oldestReady))!.state).toBe('ready');

        // Over the limit now (the replacement is pending): nothing more, even an auto one.
        await expectCaged(reserve(a.id, s.id, 'auto-d', 'auto', l), 'limit_exceeded', { limit: 'snapshots_per_sandbox', max: 4 });
      });

      it('refuses an auto snapshot at the limit when there is no ready auto snapshot to replace', async () => {
        const a = await account();
        const s = await sandbox(a.id);
        const l = limits({ maxSnapshotsPerSandbox: 2 });
        await ready(a.id, s.id, 'm-1', 'manual', l);
        await reserve(a.id, s.id, 'auto-pending', 'auto', l);
        const err = await expectCaged(reserve(a.id, s.id, 'auto-x', 'auto', l), 'limit_exceeded', { limit: 'snapshots_per_sandbox', max: 2 });
        expect(err.message).toContain('no auto snapshot to replace');
      });

      it('counts the bytes pending snapshots have written against the account limit', async () => {
        const a = await account();
        const s1 = await sandbox(a.id);
        const s2 = await sandbox(a.id);
        const l = limits({ maxAccountBytes: 1000 });

        // A pending chunked snapshot has written what its packs hold.
        const wrote = async (snapshotId: string, bytes: number) => {
          const id = newPackId();
          await insertPack(db, { id, accountId: a.id, objectKey: `packs/${a.id}/${id.slice(0, 2)}/${id}.pack`, writerSnapshotId: snapshotId });
          await db.updateTable('packs').set({ size_bytes: bytes }).where('id', '=', id).execute();
        };
        const p1 = (await reserve(a.id, s1.id, 'p1', 'manual', l)).snapshot.id;
        await wrote(p1, 999);
        expect(await accountUsage(db, a.id)).toBe(999);
        const p2 = (await reserve(a.id, s2.id, 'p2', 'manual', l)).snapshot.id;
        await wrote(p2, 1);
        expect(await accountUsage(db, a.id)).toBe(1000);
        expect(await accountUsage(db, a.id, p1)).toBe(1);

        // The limit is per account, whichever sandbox asks.
        for (const sb of [s1, s2]) {
          const err = await expectCaged(reserve(a.id, sb.id, 'p3', 'manual', l), 'limit_exceeded', { limit: 'account_bytes', max: 1000 });
          expect(err.message).toContain('account_bytes');
        }
        // Another account is not affected.
        const b = await account();
        await reserve(b.id, (await sandbox(b.id)).id, 'p3', 'manual', l);

        // A failed snapshot gives its bytes back.
        await markSnapshotFailed(db, p1, 'boom', 'x');
        expect(await accountUsage(db, a.id)).toBe(1);
        await reserve(a.id, s1.id, 'p3', 'manual', l);
      });

      it('setSnapshotProgress only moves pending snapshots', async () => {
        const a = await account();
        const s = await sandbox(a.id);
        const id = (await reserve(a.id, s.id, 'prog')).snapshot.id;
        await setSnapshotProgress(db, id, 42);
        expect(Number((await getSnapshot(db, id))!.size_bytes)).toBe(42);
        await markSnapshotReady(db, id, 100, 'c'.repeat(64));
        await setSnapshotProgress(db, id, 7);
        const row = (await getSnapshot(db, id))!;
        expect(row.state).toBe('ready');
        expect(Number(row.size_bytes)).toBe(100);
      });
    });

    describe('snapshot deletion and readers', () => {
      it('refuses to mark a snapshot deleting while a restore, export or fork reads it', async () => {
        const a = await account();
        const s = await sandbox(a.id);
        const snap = await ready(a.id, s.id, 'read-me');
        const deleter = newOperationId('delete-snapshot');
        for (const type of ['restore', 'export', 'fork']) {
          const reader = await runningOp(a.id, type, { sandboxId: s.id, snapshotId: snap });
          const err = await expectCaged(markSnapshotDeleting(db, snap, deleter), 'snapshot_in_use');
          expect(err.status).toBe(409);
          expect(err.message).toContain(reader.id);
          expect((await getSnapshot(db, snap))!.state).toBe('ready');
          await finishOperation(db, reader.id, { status: type === 'export' ? 'failed' : 'succeeded', error: type === 'export' ? { code: 'x', message: 'y' } : undefined });
        }
        // Running operations of other types, or on other snapshots, do not hold it.
        await runningOp(a.id, 'create_snapshot', { sandboxId: s.id, snapshotId: snap });
        await runningOp(a.id, 'restore', { sandboxId: s.id, snapshotId: newSnapshotId() });
        const marked = await markSnapshotDeleting(db, snap, deleter);
        expect(marked.state).toBe('deleting');
        expect(marked.id).toBe(snap);

        // Idempotent: a retried delete gets the row back, even once a reader shows up.
        await runningOp(a.id, 'restore', { sandboxId: s.id, snapshotId: snap });
        expect((await markSnapshotDeleting(db, snap, deleter)).state).toBe('deleting');
        await markSnapshotDeleted(db, snap);
        expect((await markSnapshotDeleting(db, snap, deleter)).state).toBe('deleted');
      });

      it('a reader operation does not block its own delete (byOperationId), and pending or unknown snapshots are refused', async () => {
        const a = await account();
        const s = await sandbox(a.id);
        const snap = await ready(a.id, s.id, 'self');
        const op = await runningOp(a.id, 'restore', { sandboxId: s.id, snapshotId: snap });
        expect((await markSnapshotDeleting(db, snap, op.id)).state).toBe('deleting');

        const pending = (await reserve(a.id, s.id, 'still-pending')).snapshot.id;
        await expectCaged(markSnapshotDeleting(db, pending, 'op-x'), 'invalid_state');
        await expectCaged(markSnapshotDeleting(db, newSnapshotId(), 'op-x'), 'not_found');
      });

      it('claimSnapshotForRead takes only ready snapshots', async () => {
        const a = await account();
        const s = await sandbox(a.id);
        const snap = await ready(a.id, s.id, 'claim');
        expect((await claimSnapshotForRead(db, snap)).id).toBe(snap);

        const pending = (await reserve(a.id, s.id, 'claim-pending')).snapshot.id;
        await expectCaged(claimSnapshotForRead(db, pending), 'invalid_state');

        await markSnapshotDeleting(db, snap, 'op-del');
        const err = await expectCaged(claimSnapshotForRead(db, snap), 'invalid_state');
        expect(err.message).toContain('deleting');
        await markSnapshotDeleted(db, snap);
        await expectCaged(claimSnapshotForRead(db, snap), 'not_found');
        await expectCaged(claimSnapshotForRead(db, newSnapshotId()), 'not_found');
      });
    });

    describe('operations', () => {
      it('inserts a running operation once per id', async () => {
        const a = await account();
        const id = newOperationId('create-snapshot');
        const first = await insertOperation(db, { id, accountId: a.id, type: 'create_snapshot', sandboxId: 'cage-aaaaaaaa', snapshotId: 'snap-aaaaaaaa', input: { n: 1 } });
        expect(operationDto(first)).toEqual({
          id,
          type: 'create_snapshot',
          status: 'running',
          sandbox_id: 'cage-aaaaaaaa',
          snapshot_id: 'snap-aaaaaaaa',
          progress: { step: 'queued', bytes_done: 0 },
          created_at: first.created_at.toISOString(),
        });
        expect(first.input).toEqual({ n: 1 });
        const again = await insertOperation(db, { id, accountId: a.id, type: 'create_snapshot', input: { n: 2 }, step: 'other' });
        expect(again).toEqual(first);
      });

      it('lists newest first with filters, only the account’s own', async () => {
        const a = await account();
        const b = await account();
        const s1 = 'cage-' + randomSuffix(8);
        const s2 = 'cage-' + randomSuffix(8);
        const o1 = await runningOp(a.id, 'create_snapshot', { sandboxId: s1 });
        const o2 = await runningOp(a.id, 'pause', { sandboxId: s1 });
        const o3 = await runningOp(a.id, 'create_snapshot', { sandboxId: s2 });
        const o4 = await runningOp(a.id, 'delete_sandbox', { sandboxId: s2 });
        await runningOp(b.id, 'create_snapshot', { sandboxId: s1 });
        await finishOperation(db, o1.id, { status: 'succeeded', result: { ok: true } });
        await finishOperation(db, o4.id, { status: 'failed', error: { code: 'boom', message: 'no' } });

        const ids = (rows: { id: string }[]) => rows.map((r) => r.id);
        expect(ids(await listOperations(db, a.id, {}))).toEqual([o4.id, o3.id, o2.id, o1.id]);
        expect(ids(await listOperations(db, a.id, { sandboxId: s1 }))).toEqual([o2.id, o1.id]);
        expect(ids(await listOperations(db, a.id, { type: 'create_snapshot' }))).toEqual([o3.id, o1.id]);
        expect(ids(await listOperations(db, a.id, { status: 'running' }))).toEqual([o3.id, o2.id]);
        expect(ids(await listOperations(db, a.id, { status: 'failed' }))).toEqual([o4.id]);
        expect(ids(await listOperations(db, a.id, { sandboxId: s2, type: 'create_snapshot', status: 'running' }))).toEqual([o3.id]);
        expect(ids(await listOperations(db, a.id, { sandboxId: s2, status: 'succeeded' }))).toEqual([]);
        expect(ids(await listOperations(db, a.id, { limit: 2 }))).toEqual([o4.id, o3.id]);
      });

      it('finishOperation: the first outcome wins', async () => {
        const a = await account();
        const op = await runningOp(a.id, 'create_snapshot');
        await finishOperation(db, op.id, { status: 'succeeded', result: { snapshot_id: 'snap-12345678' } });
        const done = (await getOperation(db, op.id))!;
        await finishOperation(db, op.id, { status: 'failed', error: { code: 'late', message: 'too late' } });
        await finishOperation(db, op.id, { status: 'cancelled' });
        const after = (await getOperation(db, op.id))!;
        expect(after).toEqual(done);
        const dto = operationDto(after);
        expect(dto.status).toBe('succeeded');
        expect(dto.progress.step).toBe('done');
        expect(dto.result).toEqual({ snapshot_id: 'snap-12345678' });
        expect(dto).not.toHaveProperty('error');
        expect(after.finished_at).toBeInstanceOf(Date);

        const failed = await runningOp(a.id, 'restore');
        await finishOperation(db, failed.id, { status: 'failed', error: { code: 'boom', message: 'it broke' } });
        await finishOperation(db, failed.id, { status: 'succeeded', result: { x: 1 } });
        const f = operationDto((await getOperation(db, failed.id))!);
        expect(f).toMatchObject({ status: 'failed', progress: { step: 'failed' }, error: { code: 'boom', message: 'it broke' } });
        expect(f).not.toHaveProperty('result');
      });

      it('setOperationProgress moves a running operation and is ignored after it finished', async () => {
        const a = await account();
        const op = await runningOp(a.id, 'export');
        await setOperationProgress(db, op.id, { step: 'uploading', bytesDone: 500, bytesTotal: 2000 });
        expect(operationDto((await getOperation(db, op.id))!).progress).toEqual({ step: 'uploading', bytes_done: 500, bytes_total: 2000 });
        await setOperationProgress(db, op.id, { bytesDone: 1500 });
        expect(operationDto((await getOperation(db, op.id))!).progress).toEqual({ step: 'uploading', bytes_done: 1500, bytes_total: 2000 });
        await finishOperation(db, op.id, { status: 'succeeded' });
        const finished = (await getOperation(db, op.id))!;
        await setOperationProgress(db, op.id, { step: 'late', bytesDone: 1, bytesTotal: null });
        const after = (await getOperation(db, op.id))!;
        expect(after).toEqual(finished);
        expect(operationDto(after).progress).toEqual({ step: 'done', bytes_done: 1500, bytes_total: 2000 });
      });
    });

    describe('idempotency keys', () => {
      it('claims, refuses while in flight, replays, and refuses a different request', async () => {
        const a = await account();
        const key = `key-${randomSuffix(10)}`;
        expect(await claimIdempotencyKey(db, a.id, key, 'hash-1')).toEqual({ kind: 'new' });

        const inFlight = await expectCaged(claimIdempotencyKey(db, a.id, key, 'hash-1'), 'conflict');
        expect(inFlight.message).toContain('in progress');
        const differentInFlight = await expectCaged(claimIdempotencyKey(db, a.id, key, 'hash-2'), 'conflict');
        expect(differentInFlight.message).toContain('different request');

        await completeIdempotencyKey(db, a.id, key, 202, { operation: { id: 'op-1' }, n: [1, 2] });
        expect(await claimIdempotencyKey(db, a.id, key, 'hash-1')).toEqual({ kind: 'replay', statusCode: 202, response: { operation: { id: 'op-1' }, n: [1, 2] } });
        expect(await claimIdempotencyKey(db, a.id, key, 'hash-1')).toEqual({ kind: 'replay', statusCode: 202, response: { operation: { id: 'op-1' }, n: [1, 2] } });
        const conflict = await expectCaged(claimIdempotencyKey(db, a.id, key, 'hash-2'), 'conflict');
        expect(conflict.status).toBe(409);
        expect(conflict.message).toContain('different request');

        // A completed key is not released.
        await releaseIdempotencyKey(db, a.id, key);
        expect((await claimIdempotencyKey(db, a.id, key, 'hash-1')).kind).toBe('replay');

        // Keys are per account.
        const b = await account();
        expect(await claimIdempotencyKey(db, b.id, key, 'hash-2')).toEqual({ kind: 'new' });
      });

      it('release frees an in-flight key for a retry', async () => {
        const a = await account();
        const key = `key-${randomSuffix(10)}`;
        expect(await claimIdempotencyKey(db, a.id, key, 'hash-1')).toEqual({ kind: 'new' });
        await releaseIdempotencyKey(db, a.id, key);
        const rows = await db.selectFrom('idempotency_keys').select('key').where('account_id', '=', a.id).execute();
        expect(rows).toEqual([]);
        // The retry may even be a different request.
        expect(await claimIdempotencyKey(db, a.id, key, 'hash-2')).toEqual({ kind: 'new' });
        await completeIdempotencyKey(db, a.id, key, 201, { id: 'x' });
        expect(await claimIdempotencyKey(db, a.id, key, 'hash-2')).toEqual({ kind: 'replay', statusCode: 201, response: { id: 'x' } });
      });
    });
  });
}

catalogSuite('PostgreSQL', () => openCatalog({ databaseUrl: inject('databaseUrl') }));
catalogSuite('PGlite (in memory)', () => openCatalog({}));
