import { loadConfig } from '../config.js';
import { createLogger, resolveLogFormat } from './logger.js';
import { installProcessGuards } from './process-guard.js';
import { createAppContext } from './context.js';
import { buildServer } from '../api/server.js';

/** `caged api`: the HTTP API alone, configured by the environment. */
export async function runApi(): Promise<void> {
  const config = loadConfig(process.env, 'prod');
  const log = createLogger(config.logLevel, resolveLogFormat(config.logFormat));
  installProcessGuards(log, 'caged api');
  const ctx = await createAppContext(config, log, config.temporal.address ?? '127.0.0.1:7233');
  const api = await buildServer(ctx);
  await api.listen({ host: config.httpHost, port: config.httpPort });
  log.info({ url: config.publicUrl }, 'caged api listening');
  const stop = async () => {
    await api.close().catch(() => {});
    await ctx.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
