import fs from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { historyJson } from '../src/replay/replay-histories.js';

/**
 * Saves one closed history per workflow type from a running server (e.g. `caged dev` after using
 * every operation) into test/histories/, for the replay check in CI.
 *   node --import tsx scripts/record-histories.ts [address] [outDir]
 */
const address = process.argv[2] ?? '127.0.0.1:7233';
const outDir = process.argv[3] ?? 'test/histories';
const connection = await Connection.connect({ address });
const client = new Client({ connection });
const seen = new Set<string>();
fs.mkdirSync(outDir, { recursive: true });
// Completed runs only: a deleted sandbox's workflow holds the fullest sandbox history.
for await (const wf of client.workflow.list({ query: 'ExecutionStatus = "Completed"' })) {
  if (seen.has(wf.type)) continue;
  fs.writeFileSync(path.join(outDir, `${wf.type}.json`), historyJson(address, wf.workflowId, wf.runId));
  seen.add(wf.type);
  console.log(`${wf.type} <- ${wf.workflowId}`);
}
await connection.close();
