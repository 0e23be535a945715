import { Command } from 'commander';
import { clientFor, note, out } from './context.js';

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
}
