import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { apiClient } from '../test/support/http.js';

/**
 * Runs every operation type once against a running caged API, so that a Temporal server holds one
 * closed history of each workflow type for scripts/record-histories.ts. Used after a workflow
 * change: start `caged dev` on a fresh data dir, run this, then record.
 *   node --import tsx scripts/exercise-operations.ts API_URL API_KEY
 */
const [url, key] = process.argv.slice(2);
if (!url || !key) {
  console.error('usage: node --import tsx scripts/exercise-operations.ts API_URL API_KEY');
  process.exit(2);
}
const api = apiClient(url, key);

async function op(r: { status: number; body: any }) {
  if (r.status !== 202) throw new Error(`${r.status} ${JSON.stringify(r.body)}`);
  const done = await api.waitOp(r.body.operation.id, 120_000);
  console.log(`${done.type} ${done.status}`);
  if (done.status !== 'succeeded') throw new Error(JSON.stringify(done));
  return done;
}

const id = await api.createSandbox({ idle_timeout_s: 0 });
await api.call('PUT', `/v1/sandboxes/${id}/files/hello.txt`, 'hello\n');
const snap = await api.call('POST', `/v1/sandboxes/${id}/snapshots`, { name: 'one' });
await op(snap);
const snapshotId = snap.body.snapshot.id as string;
const exported = await op(await api.call('POST', `/v1/snapshots/${snapshotId}/export`));
await op(await api.call('POST', `/v1/sandboxes/${id}/pause`));
if ((await api.call('POST', `/v1/sandboxes/${id}/resume`)).status !== 200) throw new Error('resume failed');
await op(await api.call('POST', `/v1/snapshots/${snapshotId}/restore`, {}));
const fork = await op(await api.call('POST', '/v1/sandboxes', { from_snapshot: snapshotId }));

// Import the exported archive back.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'caged-exercise-'));
const archive = path.join(dir, 'snap.tar.gz');
execFileSync('curl', ['-sf', '-o', archive, exported.result.url]);
await op(await api.call('POST', `/v1/sandboxes/${id}/snapshots/import?name=imported`, new Uint8Array(fs.readFileSync(archive)), { 'content-type': 'application/gzip' }));
fs.rmSync(dir, { recursive: true, force: true });

await op(await api.call('DELETE', `/v1/snapshots/${snapshotId}`));
await op(await api.call('DELETE', `/v1/sandboxes/${fork.result.sandbox_id}`));
await op(await api.call('DELETE', `/v1/sandboxes/${id}`));
console.log('every operation type ran');
