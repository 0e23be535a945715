import { DefaultLogger, Runtime } from '@temporalio/worker';
import { historyFiles, replayHistoryFiles } from '../src/replay/replay-histories.js';

Runtime.install({ logger: new DefaultLogger('WARN') });

/** npm run replay -- PATH...: fails (exit 1) if any history no longer replays on the current code. */
const paths = process.argv.slice(2);
if (!paths.length) {
  console.error('usage: npm run replay -- <history.json | directory> ...');
  process.exit(2);
}
const files = historyFiles(paths);
if (!files.length) {
  console.error(`no .json histories under ${paths.join(', ')}`);
  process.exit(2);
}
const outcomes = await replayHistoryFiles(files);
let failed = 0;
for (const o of outcomes) {
  if (o.error) failed++;
  console.log(`${o.error ? 'FAIL' : 'ok  '}  ${o.workflowType ?? '?'}  ${o.file}${o.error ? `\n      ${o.error}` : ''}`);
}
console.log(`${outcomes.length - failed} replayed, ${failed} failed`);
process.exit(failed ? 1 : 0);
