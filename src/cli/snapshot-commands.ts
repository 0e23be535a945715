import { Command } from 'commander';
import { clientFor, enc, isQuiet, note, out, printJson } from './context.js';
import { formatAge, formatBytes, table } from './format.js';
import { downloadVerified, uploadStream } from './transfer.js';
import type { ExportResult, Operation, Snapshot } from './types.js';
import { waitForOperation } from './wait.js';

export function snapshotCommands(program: Command): void {
  const snapshot = program.command('snapshot').description('create, list, restore, download, import and delete snapshots');

  snapshot
    .command('create <sandbox>')
    .description('snapshot a running sandbox and print the snapshot id')
    .requiredOption('--name <name>', 'snapshot name, unique within the sandbox')
    .option('--no-wait', 'print the id as soon as the snapshot is accepted')
    .action(async (id: string, o: { name: string; wait: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      const body = await client.request<{ snapshot: Snapshot; operation: Operation }>(
        'POST',
        `/v1/sandboxes/${enc(id)}/snapshots`,
        { json: { name: o.name } },
      );
      if (o.wait) await waitForOperation(client, body.operation.id, { quiet: isQuiet(cmd) });
      out(body.snapshot.id);
    });

  snapshot
    .command('list <sandbox>')
    .description("list a sandbox's snapshots")
    .option('--json', 'print the raw API response')
    .action(async (id: string, o: { json?: boolean }, cmd: Command) => {
      const body = await clientFor(cmd).request<{ snapshots: Snapshot[] }>('GET', `/v1/sandboxes/${enc(id)}/snapshots`);
      if (o.json) return printJson(body);
      const now = Date.now();
      const rows = body.snapshots.map((s) => [
        s.id,
        s.name,
        s.size_bytes === null || s.size_bytes === undefined ? '-' : formatBytes(s.size_bytes),
        formatAge(s.created_at, now),
      ]);
      out(table(['ID', 'NAME', 'SIZE', 'CREATED'], rows));
    });

  snapshot
    .command('restore <snapshot>')
    .description('roll a sandbox back to a snapshot and print the sandbox id')
    .option('--to <sandbox>', 'restore into this sandbox instead of the one the snapshot came from')
    .option('--no-wait', 'print the operation id instead of waiting for it')
    .action(async (snap: string, o: { to?: string; wait: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      const { operation } = await client.request<{ operation: Operation }>('POST', `/v1/snapshots/${enc(snap)}/restore`, {
        json: o.to ? { to: o.to } : {},
      });
      if (!o.wait) return out(operation.id);
      const done = await waitForOperation(client, operation.id, { quiet: isQuiet(cmd) });
      out(o.to ?? done.sandbox_id ?? '');
    });

  snapshot
    .command('download <snapshot>')
    .description('export a snapshot and download it as a verified .tar.gz')
    .requiredOption('-o, --output <file>', 'where to write the archive')
    .action(async (snap: string, o: { output: string }, cmd: Command) => {
      const client = clientFor(cmd);
      const { operation } = await client.request<{ operation: Operation }>('POST', `/v1/snapshots/${enc(snap)}/export`);
      const done = await waitForOperation(client, operation.id, { quiet: isQuiet(cmd) });
      const result = done.result as ExportResult | null | undefined;
      if (!result?.url || !result.sha256) throw new Error(`operation ${done.id} finished without a download url`);
      const bytes = await downloadVerified(client, result.url, o.output, result.sha256);
      note(`wrote ${o.output} (${formatBytes(bytes)}, sha256 ${result.sha256})`);
    });

  snapshot
    .command('delete <snapshot>')
    .description('delete a snapshot and its stored archive')
    .option('--no-wait', 'print the operation id instead of waiting for it')
    .action(async (snap: string, o: { wait: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      const { operation } = await client.request<{ operation: Operation }>('DELETE', `/v1/snapshots/${enc(snap)}`);
      if (!o.wait) return out(operation.id);
      await waitForOperation(client, operation.id, { quiet: isQuiet(cmd) });
      note(`deleted ${snap}`);
    });

  snapshot
    .command('import <file>')
    .description('upload a .tar.gz as a new snapshot of a sandbox and print the snapshot id')
    .requiredOption('--sandbox <sandbox>', 'sandbox the snapshot belongs to')
    .requiredOption('--name <name>', 'snapshot name, unique within the sandbox')
    .option('--no-wait', 'print the id once the upload is accepted')
    .action(async (file: string, o: { sandbox: string; name: string; wait: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      const upload = await uploadStream(file);
      let body: { snapshot: Snapshot; operation: Operation };
      try {
        body = await client.request('POST', `/v1/sandboxes/${enc(o.sandbox)}/snapshots/import?name=${enc(o.name)}`, {
          body: upload.body,
          headers: { 'content-type': 'application/gzip', 'content-length': String(upload.size) },
        });
      } finally {
        upload.done();
      }
      if (o.wait) await waitForOperation(client, body.operation.id, { quiet: isQuiet(cmd) });
      out(body.snapshot.id);
    });
}
