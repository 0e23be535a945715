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
} else {
  // Runs the TypeScript sources directly through tsx, so there is no build step to forget.
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
