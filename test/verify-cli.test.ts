import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type TestStack } from './support/stack.js';
import { runCli, type CliResult } from './support/cli.js';

let stack: TestStack;

/** Runs `node bin/caged.mjs ...` with the operator token and nothing else caged-specific from the caller. */
function cli(args: string[]): Promise<CliResult> {
  return runCli(args, { CAGED_API_URL: stack.apiUrl!, CAGED_ADMIN_TOKEN: stack.config.adminToken! });
}

// The route checks the whole catalog, so this stack has a catalog of its own (PGlite), not the shared database.
beforeAll(async () => {
  stack = await startStack({ api: true, store: 'fs', catalog: 'pglite', workers: false });
});
afterAll(async () => stack?.close());

describe('caged admin verify', () => {
  const orphan = 'snapshots/cage-00000000/snap-00000000.tar.zst';

  it('exits 0 on a consistent stack, 1 while a finding is left, 0 once --repair fixed it', { timeout: 60_000 }, async () => {
    const clean = await cli(['admin', 'verify']);
    expect(clean.code, clean.stderr).toBe(0);
    expect(clean.stdout).toBe('');
    expect(clean.stderr).toContain('no findings');

    await stack.store.put(orphan, Readable.from([Buffer.from('orphan')]));
    // Younger than the default grace period: not a finding yet.
    expect((await cli(['admin', 'verify'])).code).toBe(0);

    const found = await cli(['admin', 'verify', '--grace', '0']);
    expect(found.code).toBe(1);
    const lines = found.stdout.trimEnd().split('\n').map((l) => l.split(/ {2,}/));
    expect(lines[0]).toEqual(['CHECK', 'SUBJECT', 'REPAIR', 'DETAIL']);
    expect(lines.slice(1).map((c) => c.slice(0, 3))).toEqual([['orphan_object', orphan, 'repairable']]);

    const json = await cli(['admin', 'verify', '--grace', '0', '--json']);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, findings: [{ check: 'orphan_object', subject: orphan, repairable: true }] });

    const repaired = await cli(['admin', 'verify', '--grace', '0', '--repair']);
    expect(repaired.code, repaired.stderr).toBe(0);
    expect(repaired.stdout).toMatch(/orphan_object +\S+ +repaired/);
    expect(await stack.store.head(orphan)).toBeNull();
    expect((await cli(['admin', 'verify', '--grace', '0', '--deep'])).code).toBe(0);
  });

  it('refuses without the operator token (exit 1, unauthorized)', async () => {
    const r = await cli(['admin', 'verify', '--admin-token', 'wrong-token-0123456789']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('unauthorized');
  });
});
