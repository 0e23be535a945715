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

export function serverCommands(program: Command): void {
  program
    .command('dev')
    .description('run API, worker, Temporal dev server and local storage in one process')
    .action(() => run('../app/dev.js', 'runDev'));
  program
    .command('api')
    .description('run the HTTP API server')
    .action(() => run('../app/api-main.js', 'runApi'));
  program
    .command('worker')
    .description('run a Temporal worker')
    .action(() => run('../app/worker-main.js', 'runWorker'));
  // Used by the worker, which bundles its workflows in a child process to keep webpack out of its heap.
  program
    .command('bundle-workflows', { hidden: true })
    .description('print the bundled workflow code')
    .action(() => run('../app/workflow-bundle.js', 'printWorkflowBundle'));
}
