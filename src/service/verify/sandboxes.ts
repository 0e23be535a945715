import { accountsOf, type Check, type CheckRun, type Found } from './findings.js';

const operationRunsOn = async (run: CheckRun, sandboxId: string) =>
  !!(await run.ctx.db.selectFrom('operations').select('id').where('sandbox_id', '=', sandboxId).where('status', '=', 'running').executeTakeFirst());

/**
 * A sandbox the catalog says is running has running processes. While an operation runs on it they
 * may be stopped on purpose (a snapshot quiesces them), so such sandboxes are skipped. Only this
 * host's sandboxes can be asked: the checker runs where the API runs, beside the runtime. The
 * repair continues the processes, after checking again that no operation has started meanwhile.
 */
export const checkStoppedSandboxes: Check = async (run) => {
  const { db, runtime, config } = run.ctx;
  const accounts = accountsOf(run);
  const rows = await db
    .selectFrom('sandboxes')
    .select(['id'])
    .where('state', '=', 'running')
    .where('host_id', '=', config.hostId)
    .$if(accounts !== undefined, (q) => q.where('account_id', 'in', accounts!))
    .orderBy('seq')
    .execute();
  const found: Found[] = [];
  for (const { id } of rows) {
    if ((await runtime.processState(id)) !== 'stopped') continue;
    // Checked after the process state: an operation that stopped them would be visible by now.
    if (await operationRunsOn(run, id)) continue;
    found.push({
      check: 'sandbox_processes_stopped',
      subject: id,
      detail: `sandbox ${id} is recorded running, but its processes are stopped and no operation runs on it`,
      repair: async () => {
        if (await operationRunsOn(run, id)) return false;
        await runtime.resume(id);
        return (await runtime.processState(id)) !== 'stopped';
      },
    });
  }
  return found;
};
