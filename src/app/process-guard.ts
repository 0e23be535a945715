import type { Logger } from 'pino';
import { isCatalogUnavailable } from '../catalog/unavailable.js';

/**
 * Process-level safety nets for `caged api`, `caged worker` and `caged dev`. A rejected promise
 * nobody awaited is logged and the process keeps serving: every request and activity has its own
 * error path, so a stray rejection is a bug to fix, not a reason to drop every sandbox operation in
 * flight. An uncaught exception caused by a dependency going away (PostgreSQL closing connections)
 * is logged and survived too; any other uncaught exception leaves the process in an unknown state,
 * so it is logged and the process exits for its supervisor to restart it.
 */
export function installProcessGuards(log: Logger, name: string): void {
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason }, `${name}: unhandled promise rejection (ignored)`);
  });
  process.on('uncaughtException', (err, origin) => {
    if (isCatalogUnavailable(err)) {
      log.error({ err, origin }, `${name}: catalog connection error (survived; the pool reconnects)`);
      return;
    }
    log.fatal({ err, origin }, `${name}: uncaught exception; exiting`);
    process.exitCode = 1;
    // pino writes synchronously to stdout by default; exit on the next turn so the line is out.
    setImmediate(() => process.exit(1));
  });
}
