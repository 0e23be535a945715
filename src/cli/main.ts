import { Command, CommanderError } from 'commander';
import { adminCommands } from './admin-commands.js';
import { ApiError } from './api-client.js';
import { opsCommands } from './ops-commands.js';
import { sandboxCommands } from './sandbox-commands.js';
import { serverCommands } from './server-commands.js';
import { snapshotCommands } from './snapshot-commands.js';

export function buildProgram(): Command {
  const program = new Command('caged')
    .description('durable sandbox snapshots: a client for the caged API, and the servers behind it')
    .option('--api-url <url>', 'API base URL (default: $CAGED_API_URL or http://127.0.0.1:8080)')
    .option('--api-key <key>', 'account API key (default: $CAGED_API_KEY)')
    .option('-q, --quiet', 'no progress output on stderr')
    // Inherited by every subcommand added below, so usage errors reach the catch in main().
    .exitOverride();
  sandboxCommands(program);
  snapshotCommands(program);
  opsCommands(program);
  adminCommands(program);
  serverCommands(program);
  return program;
}

async function main(): Promise<void> {
  try {
    await buildProgram().parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has already printed the message; only the exit code is left to decide.
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    const message =
      err instanceof ApiError ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err);
    process.stderr.write(`caged: ${message}\n`);
    process.exitCode = 1;
  }
}

await main();
