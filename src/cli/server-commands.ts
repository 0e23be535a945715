import v8 from 'node:v8';
import { Command } from 'commander';

/**
 * The server entry points are loaded only when asked for: client commands then start fast and keep
 * working on machines without the server's dependencies. The specifier sits in a variable so the
 * type checker doesn't resolve it either.
 */
async function run(specifier: string, exportName: string): Promise<void> {
  const mod = (await import(specifier)) as Record<string, unknown>;
  const fn = mod[exportName];
  if (typeof fn !== 'function') throw new Error(`${specifier} does not export ${exportName}()`);
  await (fn as () => Promise<void>)();
}

/**
 * The worker's heavy lifting happens in tar and zstd and in native hashing; its own heap holds the
 * Temporal SDK and little else. Asking V8 to favour size over speed keeps the start-up heap from
 * ballooning (the worker peaked near 300 MB for its first half minute without it, ~215 MB with it).
 * Set before the server modules load, which is when the heap grows.
 */
function favourMemory(): void {
  v8.setFlagsFromString('--optimize-for-size');
}

export function serverCommands(program: Command): void {
  program
    .command('dev')
    .description('run API, worker, Temporal dev server and local storage in one process')
    .action(() => {
      favourMemory();
      return run('../app/dev.js', 'runDev');
    });
  program
    .command('api')
    .description('run the HTTP API server')
    .action(() => run('../app/api-main.js', 'runApi'));
  program
    .command('worker')
    .description('run a Temporal worker')
    .action(() => {
      favourMemory();
      return run('../app/worker-main.js', 'runWorker');
    });
  // Used by the worker, which bundles its workflows in a child process to keep webpack out of its heap.
  program
    .command('bundle-workflows', { hidden: true })
    .description('print the bundled workflow code')
    .action(() => run('../app/workflow-bundle.js', 'printWorkflowBundle'));
}
