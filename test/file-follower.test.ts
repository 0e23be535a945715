import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { followFile } from '../src/activities/file-follower.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'caged-follow-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A child that appends `parts` to `file` one by one with pauses, like zstd writing an archive. */
function slowWriter(file: string, parts: Buffer[], pauseMs: number) {
  const src = path.join(dir, `parts-${path.basename(file)}`);
  fs.mkdirSync(src);
  parts.forEach((p, i) => fs.writeFileSync(path.join(src, String(i).padStart(4, '0')), p));
  const child = spawn('sh', ['-c', `for f in "$1"/*; do cat "$f" >> "$2"; sleep ${pauseMs / 1000}; done`, 'sh', src, file], { stdio: 'ignore' });
  const done = new Promise<void>((resolve, reject) =>
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`writer exited ${code}`)))),
  );
  return { child, done };
}

describe('followFile', () => {
  it('reads every byte a child appends while it runs, in order, through one buffer', async () => {
    const file = path.join(dir, 'growing.bin');
    fs.writeFileSync(file, '');
    // Pieces of odd sizes around the 1 MiB read size, with pauses so the reader hits EOF mid-way.
    const parts = [5, 1024 * 1024 + 3, 70_000, 2 * 1024 * 1024 - 1, 1].map((n) => randomBytes(n));
    const writer = slowWriter(file, parts, 60);
    const hash = createHash('sha256');
    const seen = new Set<ArrayBufferLike>();
    const n = await followFile(file, {
      writerDone: writer.done,
      onChunk: (chunk) => {
        seen.add(chunk.buffer);
        hash.update(chunk);
      },
    });
    const all = Buffer.concat(parts);
    expect(n).toBe(all.length);
    expect(hash.digest('hex')).toBe(createHash('sha256').update(all).digest('hex'));
    expect(seen.size).toBe(1);
  });

  it('stops with the abort reason when its signal aborts, while the writer is still running', async () => {
    const file = path.join(dir, 'stalled.bin');
    fs.writeFileSync(file, 'x');
    const writer = slowWriter(file, [Buffer.from('a'), Buffer.from('b')], 5000);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('cancelled by test')), 200);
    const started = Date.now();
    await expect(followFile(file, { writerDone: writer.done, onChunk: () => {}, signal: ac.signal })).rejects.toThrow('cancelled by test');
    expect(Date.now() - started).toBeLessThan(3000);
    writer.child.kill('SIGKILL');
  });

  it('rejects with the error its consumer throws (a crossed limit) and reads no further', async () => {
    const file = path.join(dir, 'limit.bin');
    fs.writeFileSync(file, randomBytes(3 * 1024 * 1024));
    let calls = 0;
    await expect(
      followFile(file, {
        writerDone: Promise.resolve(),
        onChunk: () => {
          if (++calls === 2) throw new Error('limit snapshot_bytes exceeded');
        },
      }),
    ).rejects.toThrow('limit snapshot_bytes exceeded');
    expect(calls).toBe(2);
  });
});
