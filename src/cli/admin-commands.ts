import { Command } from 'commander';
import { clientFor, note, out, parseSeconds, printJson } from './context.js';
import { findingsTable, type FindingRow } from './format.js';

export function adminCommands(program: Command): void {
  const admin = program
    .command('admin')
    .description('operator commands, authenticated with the admin token')
    .option('--admin-token <token>', 'admin token (default: $CAGED_ADMIN_TOKEN)');

  admin
    .command('create-account')
    .description('create an account and print its API key, which is shown only once')
    .requiredOption('--name <name>', 'account name')
    .action(async (o: { name: string }, cmd: Command) => {
      const body = await clientFor(cmd).request<{ id: string; name: string; api_key: string }>('POST', '/v1/admin/accounts', {
        json: { name: o.name },
        admin: true,
      });
      note(`created account ${body.id} (${body.name})`);
      out(body.api_key);
    });

  admin
    .command('verify')
    .description('check the catalog, the store, Temporal and the sandboxes against each other; exit 1 on any finding left unrepaired')
    .option('--deep', "also read every ready snapshot's object and check its sha256")
    .option('--repair', 'fix what is safe to fix: orphans past the grace period, stuck rows, stopped sandboxes')
    .option('--grace <seconds>', 'how old an orphan or stuck row must be to count (default 900)', parseSeconds)
    .option('--json', 'print the raw API response')
    .action(async (o: { deep?: boolean; repair?: boolean; grace?: number; json?: boolean }, cmd: Command) => {
      const body = await clientFor(cmd).request<{ ok: boolean; findings: FindingRow[] }>('POST', '/v1/admin/verify', {
        json: { deep: o.deep ?? false, repair: o.repair ?? false, ...(o.grace === undefined ? {} : { grace_s: o.grace }) },
        admin: true,
      });
      if (o.json) printJson(body);
      else if (body.findings.length === 0) note('no findings: the stack is consistent');
      else out(findingsTable(body.findings));
      const left = body.findings.filter((f) => f.repaired !== true).length;
      if (!o.json && body.findings.length) note(`${body.findings.length} finding(s), ${left} not repaired`);
      if (left > 0) process.exitCode = 1;
    });
}
