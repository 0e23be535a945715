import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode } from '@temporalio/worker';
import { PROJECT_ROOT } from '../runtime/tools.js';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

const silent = () => {};
const bundlerLogger = { trace: silent, debug: silent, info: silent, warn: silent, log: silent, error: (m: string) => process.stderr.write(`${m}\n`) };

/** Bundles the workflows (webpack) and returns the code; what `caged bundle-workflows` prints. */
export async function bundleWorkflows(): Promise<string> {
  return (await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: bundlerLogger })).code;
}

/**
 * Bundles the workflows in a short-lived child process. Done in the worker itself, webpack raised
 * the worker's start-up peak from about 310 to 400 MB and left about 50 MB more resident for good.
 */
export function bundleWorkflowsInChild(): Promise<{ code: string }> {
  const child = spawn(process.execPath, [path.join(PROJECT_ROOT, 'bin', 'caged.mjs'), 'bundle-workflows'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (err.length < 16_384) err += d;
  });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const bundle = Buffer.concat(out).toString('utf8');
      if (code === 0 && bundle.length > 0) resolve({ code: bundle });
      else reject(new Error(`bundling the workflows failed (${signal ?? `exit ${code}`}): ${err.trim() || 'no output'}`));
    });
  });
}

/** The hidden command's body: the bundle on stdout, nothing else. */
export async function printWorkflowBundle(): Promise<void> {
  const code = await bundleWorkflows();
  await new Promise<void>((resolve, reject) => process.stdout.write(code, (e) => (e ? reject(e) : resolve())));
}
