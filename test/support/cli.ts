import { spawn } from 'node:child_process';
import { PROJECT_ROOT } from '../../src/runtime/tools.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node bin/caged.mjs ...` from the project root, as a user would, with `env` and nothing else
 * caged-specific from the caller: a variable of the test run never stands in for what a test sets.
 */
export function runCli(args: string[], env: Record<string, string>): Promise<CliResult> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(CAGED_|TEMPORAL_|DATABASE_URL$|S3_)/.test(k)));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/caged.mjs', ...args], {
      cwd: PROJECT_ROOT,
      env: { ...inherited, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
