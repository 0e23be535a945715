import pino, { type Logger } from 'pino';

export function createLogger(level: string, name = 'caged'): Logger {
  return pino({ name, level });
}
