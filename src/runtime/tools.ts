import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const VENV_BIN = path.join(PROJECT_ROOT, '.tools', 'venv', 'bin');

function onPath(name: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The Temporal CLI: TEMPORAL_CLI, else the project's tools folder, else `temporal` on PATH. */
export function temporalCliPath(explicit = process.env.TEMPORAL_CLI): string {
  if (explicit) {
    if (!fs.existsSync(explicit)) throw new Error(`TEMPORAL_CLI=${explicit} does not exist`);
    return explicit;
  }
  const local = path.join(VENV_BIN, 'temporal');
  if (fs.existsSync(local)) return local;
  const found = onPath('temporal');
  if (found) return found;
  throw new Error('Temporal CLI not found: run `npm run setup-tools` or set TEMPORAL_CLI');
}

export function motoServerPath(): string {
  const local = path.join(VENV_BIN, 'moto_server');
  if (fs.existsSync(local)) return local;
  const found = onPath('moto_server');
  if (found) return found;
  throw new Error('moto_server not found: run `npm run setup-tools`');
}
