import { Command } from 'commander';
import { ApiError } from './api-client.js';
import { clientFor, enc, isQuiet, note, out, printJson } from './context.js';
import { formatAge, formatBytes, table, timelineTable, type TimelineView } from './format.js';
import type { Operation } from './types.js';
import { unwrapOperation, waitForOperation } from './wait.js';

function describe(op: Operation): string {
  const p = op.progress;
  const lines: [string, string | null | undefined][] = [
    ['id', op.id],
    ['type', op.type],
    ['status', op.status],
    ['sandbox', op.sandbox_id],
    ['snapshot', op.snapshot_id],
    ['step', p?.step],
    ['retrying', p?.retrying ? `attempt ${p.retrying.attempt}, next at ${p.retrying.next_at}: ${p.retrying.error}` : undefined],
    [
      'progress',
      p?.bytes_done == null
        ? undefined
        : p.bytes_total
          ? `${formatBytes(p.bytes_done)} / ${formatBytes(p.bytes_total)} (${Math.floor((p.bytes_done / p.bytes_total) * 100)}%)`
          : formatBytes(p.bytes_done),
    ],
    ['created', op.created_at && `${op.created_at} (${formatAge(op.created_at)})`],
    ['finished', typeof op.finished_at === 'string' ? op.finished_at : undefined],
    ['error', op.error && `${op.error.code ?? 'unknown'}: ${op.error.message ?? ''}`],
    ['result', op.result ? JSON.stringify(op.result) : undefined],
  ];
  const shown = lines.filter((l): l is [string, string] => typeof l[1] === 'string' && l[1] !== '');
  const width = Math.max(...shown.map(([k]) => k.length)) + 1;
  return shown.map(([k, v]) => `${`${k}:`.padEnd(width)} ${v}`).join('\n');
}

export function opsCommands(program: Command): void {
  const ops = program.command('ops').description('inspect, cancel and retry long-running operations');

  ops
    .command('list')
    .description('list operations, newest first')
    .option('--sandbox <sandbox>', 'only this sandbox')
    .option('--status <status>', 'running, succeeded, failed or cancelled')
    .option('--type <type>', 'create_snapshot, restore, export, import, …')
    .option('--json', 'print the raw API response')
    .action(async (o: { sandbox?: string; status?: string; type?: string; json?: boolean }, cmd: Command) => {
      const query = new URLSearchParams();
      if (o.sandbox) query.set('sandbox_id', o.sandbox);
      if (o.status) query.set('status', o.status);
      if (o.type) query.set('type', o.type);
      const qs = query.size ? `?${query}` : '';
      const body = await clientFor(cmd).request<{ operations: Operation[] }>('GET', `/v1/operations${qs}`);
      if (o.json) return printJson(body);
      const now = Date.now();
      const rows = body.operations.map((op) => [
        op.id,
        op.type,
        op.status,
        op.sandbox_id ?? '-',
        op.progress?.step ?? '-',
        op.created_at ? formatAge(op.created_at, now) : '-',
      ]);
      out(table(['ID', 'TYPE', 'STATUS', 'SANDBOX', 'STEP', 'CREATED'], rows));
    });

  ops
    .command('show <operation>')
    .description("show one operation, with its progress, its error and its workflow's timeline (steps, activities, attempts and their errors)")
    .option('--json', 'print the API response, with the timeline under "timeline"')
    .action(async (id: string, o: { json?: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      const body = await client.request<Record<string, unknown>>('GET', `/v1/operations/${enc(id)}`);
      // The operation is worth showing even when Temporal cannot be asked for its history.
      const timeline = await client.request<TimelineView>('GET', `/v1/operations/${enc(id)}/timeline`).catch((err: unknown) => {
        if (!(err instanceof ApiError)) throw err;
        note(`timeline unavailable: ${err.code}: ${err.message}`);
        return undefined;
      });
      if (o.json) return printJson(timeline ? { ...body, timeline } : body);
      out(describe(unwrapOperation(body)));
      if (!timeline) return;
      out('');
      out(timeline.entries.length ? timelineTable(timeline) : `no workflow history yet (${timeline.status})`);
    });

  ops
    .command('replay <operation>')
    .description("replay the operation's workflow history against this checkout's workflow code; exit 1 on non-determinism")
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const json = await clientFor(cmd).request<unknown>('GET', `/v1/operations/${enc(id)}/history`);
      if (!isQuiet(cmd)) note('bundling the workflows and replaying…');
      // Loaded here: the worker package and the bundler are heavy, and only this command needs them.
      const { replayHistories } = await import('../replay/replay-histories.js');
      const [outcome] = await replayHistories([{ id, json }]);
      if (outcome?.error) {
        out(`nondeterministic: ${id} (${outcome.workflowType ?? '?'}): ${outcome.error}`);
        process.exitCode = 1;
      } else out(`ok: ${id} (${outcome?.workflowType ?? '?'}) replays against the current code`);
    });

  ops
    .command('cancel <operation>')
    .description('ask a running operation to stop; it rolls back what it started')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const body = await clientFor(cmd).request('POST', `/v1/operations/${enc(id)}/cancel`);
      const op = body ? unwrapOperation(body) : undefined;
      note(`cancel requested for ${id}${op?.status ? ` (status: ${op.status})` : ''}`);
    });

  ops
    .command('retry <operation>')
    .description('run a failed operation again and print the new operation id')
    .option('--no-wait', 'print the new id without waiting for it')
    .action(async (id: string, o: { wait: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      const { operation } = await client.request<{ operation: Operation }>('POST', `/v1/operations/${enc(id)}/retry`);
      if (o.wait) await waitForOperation(client, operation.id, { quiet: isQuiet(cmd) });
      out(operation.id);
    });
}
