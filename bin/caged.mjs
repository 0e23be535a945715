#!/usr/bin/env node
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// caged runs on Node 24 (LTS). `npm install` brings the project's own Node from the npm registry
// (node-linux-*), which npm scripts find first; when an older system Node starts this file directly,
// it hands over to that one, forwarding signals so that stopping this process stops caged.
const MIN_MAJOR = 24;
if (Number(process.versions.node.split('.')[0]) < MIN_MAJOR) {
  const own = fileURLToPath(new URL('../node_modules/.bin/node', import.meta.url));
  if (!existsSync(own)) {
    console.error(`caged needs Node ${MIN_MAJOR} or later (this is ${process.version}); run \`npm install\` to get the project's own Node`);
    process.exit(1);
  }
  const child = spawn(own, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + 15 : 1)));
} else if (needsFixedMmapThreshold()) {
  // Same process (execve keeps the pid, so supervisors and process groups see no change), with
  // glibc told to keep its mmap threshold: see needsFixedMmapThreshold.
  process.execve(process.execPath, [process.execPath, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    ...process.env,
    MALLOC_MMAP_THRESHOLD_: '131072',
    MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2',
  });
} else {
  // Runs the TypeScript sources directly through tsx, so there is no build step to forget.
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}

/**
 * The servers' chunk workers allocate and free buffers of one to four MiB by the thousand (zstd
 * frames and their contexts, pack reads). glibc raises its mmap threshold each time such a block
 * is freed, so later ones come from the threads' malloc arenas, which keep what is freed: two
 * workers compressing and decompressing 1 MiB frames grew by 210 MB, and by 110 MB with the
 * threshold fixed (MALLOC_MMAP_THRESHOLD_, read by glibc only at start-up; other C libraries ignore
 * it). Each thread also gets an arena of its own that keeps what it freed; two arenas in all
 * (MALLOC_ARENA_MAX) took the bench's worker from 219 to 183 MB idle and its peak from 408 to 380 MB
 * (1 GiB, 2026-12-08), and the first snapshot was no slower. Not set when the user set them, or
 * where Node cannot execve.
 */
function needsFixedMmapThreshold() {
  if (!['dev', 'worker', 'api'].includes(process.argv[2] ?? '')) return false;
  return process.platform === 'linux' && typeof process.execve === 'function' && process.env.MALLOC_MMAP_THRESHOLD_ === undefined;
}
