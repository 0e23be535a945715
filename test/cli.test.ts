import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { apiClient } from './support/http.js';
import { PROJECT_ROOT } from '../src/runtime/tools.js';

let stack: TestStack;
let apiKey: string;
let api: ReturnType<typeof apiClient>;

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment without anything caged-specific from the caller, so only what a test sets counts. */
function baseEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(CAGED_|TEMPORAL_|DATABASE_URL$|S3_)/.test(k)));
}

/** Runs `node bin/caged.mjs ...` from the project root, as a user would. */
function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/caged.mjs', ...args], {
      cwd: PROJECT_ROOT,
      env: { ...baseEnv(), CAGED_API_URL: stack.apiUrl!, CAGED_API_KEY: apiKey, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Splits a table the CLI printed into rows of cells (columns are separated by two or more spaces). */
const cells = (line: string) => line.split(/ {2,}/);

beforeAll(async () => {
  stack = await startStack({ api: true, store: 'fs', catalog: 'postgres' });
  apiKey = (await stack.newAccount('cli')).apiKey;
  api = apiClient(stack.apiUrl!, apiKey);
});
afterAll(async () => stack?.close());

describe('caged CLI against a running stack', () => {
  let sandbox: string;
  let snap: string;
  let opId: string;

  it('up prints the new sandbox id and nothing else', async () => {
    const r = await cli(['up']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^cage-[a-z0-9]{8}\n$/);
    sandbox = r.stdout.trim();
    const got = await api.call('GET', `/v1/sandboxes/${sandbox}`);
    expect(got.status).toBe(200);
    expect(got.body.state).toBe('running');
  });

  it('snapshot create waits for the snapshot and prints its id', async () => {
    const r = await cli(['snapshot', 'create', sandbox, '--name', 'n1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^snap-[a-z0-9]{8}\n$/);
    snap = r.stdout.trim();
    // It waited: the snapshot is ready when the command returns.
    const got = await api.call('GET', `/v1/snapshots/${snap}`);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ id: snap, name: 'n1', state: 'ready', sandbox_id: sandbox });
  });

  it('snapshot list prints an aligned table', async () => {
    const r = await cli(['snapshot', 'list', sandbox]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.endsWith('\n')).toBe(true);
    const lines = r.stdout.slice(0, -1).split('\n');
    expect(lines).toHaveLength(2);
    const [header, row] = lines as [string, string];
    expect(cells(header)).toEqual(['ID', 'NAME', 'SIZE', 'CREATED']);
    const m = /^(snap-[a-z0-9]{8}) {2,}(n1) {2,}(\d+(?:\.\d+)? (B|KB|MB)) {2,}(just now)$/.exec(row);
    expect(m, row).not.toBeNull();
    expect(m![1]).toBe(snap);
    // Every value starts in its header's column.
    for (const [h, v] of [['ID', snap], ['NAME', 'n1'], ['SIZE', m![3]!], ['CREATED', 'just now']] as const) {
      expect(row.indexOf(v), h).toBe(header.indexOf(h));
    }
    // The size shown is the snapshot's size, in decimal units rounded to three digits.
    const size = (await api.call('GET', `/v1/snapshots/${snap}`)).body.size_bytes as number;
    const factor = { B: 1, KB: 1e3, MB: 1e6 }[m![4] as 'B' | 'KB' | 'MB'];
    const shown = Number(m![3]!.split(' ')[0]) * factor;
    expect(Math.abs(shown - size)).toBeLessThanOrEqual(size * 0.005 + 0.5);
  });

  it('ops list shows the create_snapshot operation as succeeded, and ops show describes it', async () => {
    const r = await cli(['ops', 'list', '--sandbox', sandbox]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(cells(lines[0]!)).toEqual(['ID', 'TYPE', 'STATUS', 'SANDBOX', 'STEP', 'CREATED']);
    expect(lines).toHaveLength(2);
    const row = cells(lines[1]!);
    expect(row).toEqual([expect.stringMatching(/^op-/), 'create_snapshot', 'succeeded', sandbox, 'done', 'just now']);
    opId = row[0]!;
    const fromApi = (await api.call('GET', `/v1/operations?sandbox_id=${sandbox}`)).body.operations;
    expect(fromApi.map((o: any) => [o.id, o.snapshot_id])).toEqual([[opId, snap]]);

    // Without a filter the operation is listed too.
    const all = await cli(['ops', 'list']);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout.split('\n').some((l) => l.startsWith(`${opId}  `) && cells(l)[2] === 'succeeded')).toBe(true);

    const show = await cli(['ops', 'show', opId]);
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toMatch(new RegExp(`^id: +${opId}$`, 'm'));
    expect(show.stdout).toMatch(/^type: +create_snapshot$/m);
    expect(show.stdout).toMatch(/^status: +succeeded$/m);
    expect(show.stdout).toMatch(new RegExp(`^sandbox: +${sandbox}$`, 'm'));
    expect(show.stdout).toMatch(new RegExp(`^snapshot: +${snap}$`, 'm'));
    expect(show.stdout).not.toMatch(/^error:/m);
  });

  it('ops show of an unknown operation fails with not_found', async () => {
    const r = await cli(['ops', 'show', 'op-create-snapshot-000000000000']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^caged: not_found: /);
  });

  it('snapshot create with a taken name exits 1 with name_taken', async () => {
    const r = await cli(['snapshot', 'create', sandbox, '--name', 'n1']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('name_taken');
    expect(r.stderr).toMatch(/^caged: name_taken: .*n1/);
    expect((await api.call('GET', `/v1/sandboxes/${sandbox}/snapshots`)).body.snapshots.map((s: any) => s.id)).toEqual([snap]);
  });

  it('snapshot delete waits for the delete; the list no longer shows it', async () => {
    const r = await cli(['snapshot', 'delete', snap]);
    expect(r.code, r.stderr).toBe(0);
    expect((await api.call('GET', `/v1/snapshots/${snap}`)).status).toBe(404);
    const list = await cli(['snapshot', 'list', sandbox]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toBe('ID  NAME  SIZE  CREATED\n');
    expect(list.stdout).not.toContain(snap);
  });

  it('admin create-account prints only the new key, which works', async () => {
    const r = await cli(['admin', 'create-account', '--name', 'x'], { CAGED_ADMIN_TOKEN: stack.config.adminToken!, CAGED_API_KEY: '' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^caged_sk_\S+\n$/);
    const key = r.stdout.trim();
    const list = await apiClient(stack.apiUrl!, key).call('GET', '/v1/sandboxes');
    expect(list.status).toBe(200);
    expect(list.body).toEqual({ sandboxes: [] });
  });

  it('admin create-account without the operator token exits 1 with unauthorized', async () => {
    const r = await cli(['admin', 'create-account', '--name', 'x']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^caged: unauthorized: /);
    const wrong = await cli(['admin', 'create-account', '--name', 'x'], { CAGED_ADMIN_TOKEN: 'not-the-operator-token' });
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toBe('');
    expect(wrong.stderr).toMatch(/^caged: unauthorized: /);
  });

  it('a wrong API key exits 1 with unauthorized', async () => {
    const r = await cli(['snapshot', 'list', sandbox], { CAGED_API_KEY: 'caged_sk_wrongwrongwrongwrongwrong' });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^caged: unauthorized: /);
  });

  it('pause and resume', async () => {
    const up = await cli(['up']);
    expect(up.code, up.stderr).toBe(0);
    const id = up.stdout.trim();

    const pause = await cli(['pause', id]);
    expect(pause.code, pause.stderr).toBe(0);
    // It names the automatic snapshot the pause took.
    const m = new RegExp(`^paused ${id} \\(snapshot (snap-[a-z0-9]{8})\\)\\n$`).exec(pause.stdout);
    expect(m, pause.stdout).not.toBeNull();
    const snaps = (await api.call('GET', `/v1/sandboxes/${id}/snapshots`)).body.snapshots;
    expect(snaps.map((s: any) => [s.id, s.kind, s.state])).toEqual([[m![1], 'auto', 'ready']]);
    expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('paused');
    expect(await stack.runtime.processState(id)).not.toBe('running');

    const resume = await cli(['resume', id]);
    expect(resume.code, resume.stderr).toBe(0);
    expect(resume.stdout).toBe(`${id}\n`);
    expect((await api.call('GET', `/v1/sandboxes/${id}`)).body.state).toBe('running');
    const ran = await api.exec(id, ['echo', 'back']);
    expect(ran).toEqual({ exit_code: 0, stdout: 'back\n', stderr: '' });
  });
});
