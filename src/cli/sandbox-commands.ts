import { Command } from 'commander';
import { clientFor, enc, isQuiet, note, out, parseSeconds } from './context.js';
import type { Operation, Sandbox } from './types.js';
import { waitForOperation } from './wait.js';

/** Create answers `{sandbox}`; tolerate a bare sandbox too. */
function sandboxOf(body: unknown): Sandbox {
  const b = body as { sandbox?: Sandbox } & Sandbox;
  return b.sandbox ?? b;
}

export function sandboxCommands(program: Command): void {
  program
    .command('up')
    .description('create a sandbox, or fork one from a snapshot, and print its id')
    .option('--template <name>', 'template to start from')
    .option('--from-snapshot <snapshot>', 'fork a new sandbox from this snapshot')
    .option('--idle-timeout <seconds>', 'pause automatically after this long idle', parseSeconds)
    .option('--no-wait', 'return once the fork is accepted instead of when it finishes')
    .action(async (o: { template?: string; fromSnapshot?: string; idleTimeout?: number; wait: boolean }, cmd: Command) => {
      if (o.template && o.fromSnapshot) cmd.error('error: --template and --from-snapshot cannot be used together');
      const client = clientFor(cmd);
      const idle = o.idleTimeout === undefined ? {} : { idle_timeout_s: o.idleTimeout };
      if (!o.fromSnapshot) {
        const body = await client.request('POST', '/v1/sandboxes', { json: { template: o.template, ...idle } });
        out(sandboxOf(body).id);
        return;
      }
      const body = await client.request<{ sandbox: Sandbox; operation: Operation }>('POST', '/v1/sandboxes', {
        json: { from_snapshot: o.fromSnapshot, ...idle },
      });
      if (o.wait) await waitForOperation(client, body.operation.id, { quiet: isQuiet(cmd) });
      out(body.sandbox.id);
    });

  program
    .command('pause <sandbox>')
    .description('snapshot a sandbox and stop it')
    .option('--no-wait', 'print the operation id instead of waiting for it')
    .action(async (id: string, o: { wait: boolean }, cmd: Command) => {
      const client = clientFor(cmd);
      const { operation } = await client.request<{ operation: Operation }>('POST', `/v1/sandboxes/${enc(id)}/pause`);
      if (!o.wait) return out(operation.id);
      const done = await waitForOperation(client, operation.id, { quiet: isQuiet(cmd) });
      // The pause's auto snapshot is in its result; the operation row names no snapshot.
      const snap = done.snapshot_id ?? (typeof done.result?.snapshot_id === 'string' ? done.result.snapshot_id : undefined);
      out(`paused ${id}${snap ? ` (snapshot ${snap})` : ''}`);
    });

  program
    .command('resume <sandbox>')
    .description('start a paused sandbox again')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const body = await clientFor(cmd).request('POST', `/v1/sandboxes/${enc(id)}/resume`);
      out(sandboxOf(body ?? { id }).id ?? id);
    });

  program
    .command('exec <sandbox> <command...>')
    .description('run a command in a sandbox (put it after --) and exit with its status')
    .action(async (id: string, command: string[], _o: unknown, cmd: Command) => {
      const res = await clientFor(cmd).request<{ exit_code: number; stdout?: string; stderr?: string }>(
        'POST',
        `/v1/sandboxes/${enc(id)}/exec`,
        { json: { command } },
      );
      if (res.stdout) process.stdout.write(res.stdout);
      if (res.stderr) process.stderr.write(res.stderr);
      if (typeof res.exit_code !== 'number') note('caged: exec returned no exit code');
      process.exitCode = typeof res.exit_code === 'number' ? res.exit_code : 1;
    });
}
