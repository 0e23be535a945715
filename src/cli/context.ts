import { InvalidArgumentError, type Command } from 'commander';
import { ApiClient, DEFAULT_API_URL } from './api-client.js';

interface GlobalOptions {
  apiUrl?: string;
  apiKey?: string;
  adminToken?: string;
  quiet?: boolean;
}

/** Flags win over the environment so a one-off command can target another server. */
export function clientFor(cmd: Command): ApiClient {
  const o = cmd.optsWithGlobals<GlobalOptions>();
  const env = (name: string) => process.env[name] || undefined;
  return new ApiClient(
    o.apiUrl ?? env('CAGED_API_URL') ?? DEFAULT_API_URL,
    o.apiKey ?? env('CAGED_API_KEY'),
    o.adminToken ?? env('CAGED_ADMIN_TOKEN'),
  );
}

/** Whether to hide progress output (`--quiet`). */
export function isQuiet(cmd: Command): boolean {
  return cmd.optsWithGlobals<GlobalOptions>().quiet === true;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Chatter for humans; stdout stays reserved for what scripts parse. */
export function note(message: string): void {
  process.stderr.write(`${message}\n`);
}

export function parseSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number of seconds');
  return n;
}

export function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

export const enc = encodeURIComponent;
