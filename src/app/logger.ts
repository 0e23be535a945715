import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';
import { DefaultLogger, Runtime, type LogEntry, type LogLevel } from '@temporalio/worker';

export type LogFormat = 'json' | 'pretty';

/** Human-readable lines in a terminal, JSON lines otherwise (or as asked). */
export function resolveLogFormat(setting: 'auto' | LogFormat): LogFormat {
  return setting === 'auto' ? (process.stdout.isTTY ? 'pretty' : 'json') : setting;
}

export function createLogger(level: string, format: LogFormat = 'json', name = 'caged'): Logger {
  if (format === 'json') return pino({ name, level });
  // Synchronous and in-process: no worker thread, and nothing lost when the process exits.
  return pino({ name, level }, pretty({ sync: true, colorize: true, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname,name' }));
}

/**
 * States the SDK reports on every start that are normal for caged: host queues run no workflows,
 * nobody uses Nexus. Logged at debug, so a normal start prints no warning.
 */
const ROUTINE = [/^No workflows registered/, /^No activities registered/, /^No Nexus services registered/, /^Worker state changed/];

const LEVEL: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };

/**
 * The Temporal SDK's own logs go through the service's logger (one format, one level), its
 * routine start-up messages at debug. Must run before the first worker or connection is made.
 */
export function installTemporalLogging(log: Logger): void {
  const temporal = log.child({ component: 'temporal' });
  const forward = (entry: LogEntry) => {
    const level = ROUTINE.some((re) => re.test(entry.message)) ? 'debug' : LEVEL[entry.level];
    temporal[level](entry.meta ?? {}, entry.message);
  };
  Runtime.install({ logger: new DefaultLogger('DEBUG', forward) });
}
