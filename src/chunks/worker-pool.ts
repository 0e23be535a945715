import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { CagedError, isErrorCode } from '../shared/errors.js';

/** A message from a chunk worker (chunk-worker.mjs lists them). */
export interface WorkerMessage {
  op: 'scanned' | 'stored' | 'restored' | 'failed';
  task: number;
  [k: string]: unknown;
}

/**
 * One task's conversation with the worker it was given: send() posts, next() waits for the next
 * answer. A failure the worker reports (or the worker dying) rejects next().
 */
export interface TaskChannel {
  readonly worker: number;
  send(msg: Record<string, unknown>, transfer?: ArrayBuffer[]): void;
  next(): Promise<WorkerMessage>;
  /** Tells the worker to free what the task holds (after a failure or a cancel elsewhere). */
  close(): void;
}

interface Slot {
  worker: Worker;
  open: number;
}

interface Pending {
  queue: WorkerMessage[];
  waiter?: { resolve: (m: WorkerMessage) => void; reject: (e: Error) => void };
  failure?: Error;
  slot: number;
}

/**
 * Worker threads that do a snapshot's or restore's CPU work (reading, cutting, hashing, compressing,
 * writing files), shared by every data mover of the process: one per core, at least two. Each task
 * sticks to one worker (its scanned data lives there). A worker that dies is replaced, and the tasks
 * it held fail.
 */
export class ChunkPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextTask = 1;

  constructor(readonly size = Math.max(2, Math.min(os.availableParallelism(), 8))) {
    for (let i = 0; i < size; i++) this.slots.push({ worker: this.spawn(i), open: 0 });
  }

  private spawn(i: number): Worker {
    const w = new Worker(new URL('./chunk-worker.mjs', import.meta.url));
    // Idle workers must not keep a finished process alive.
    w.unref();
    w.on('message', (m: WorkerMessage) => this.deliver(m));
    const lost = (why: string) => {
      for (const [task, p] of this.pending) if (p.slot === i) this.fail(task, new Error(`chunk worker ${i} ${why}`));
      if (this.slots[i]?.worker === w) this.slots[i] = { worker: this.spawn(i), open: 0 };
    };
    w.on('error', (err) => lost(`failed: ${err.message}`));
    w.on('exit', (code) => lost(`exited with code ${code}`));
    return w;
  }

  private deliver(m: WorkerMessage): void {
    const p = this.pending.get(m.task);
    if (!p) return;
    if (m.op === 'failed') {
      const e = m.error as { code?: string; message: string; path?: string };
      const err = e.code && isErrorCode(e.code) && e.code !== 'internal' ? new CagedError(e.code, e.message) : Object.assign(new Error(e.message), { code: e.code, path: e.path });
      this.fail(m.task, err);
      return;
    }
    if (p.waiter) {
      const w = p.waiter;
      p.waiter = undefined;
      w.resolve(m);
    } else p.queue.push(m);
  }

  private fail(task: number, err: Error): void {
    const p = this.pending.get(task);
    if (!p) return;
    p.failure = err;
    if (p.waiter) {
      const w = p.waiter;
      p.waiter = undefined;
      w.reject(err);
    }
  }

  /** A new task on the least busy worker. */
  open(): TaskChannel {
    let best = 0;
    for (let i = 1; i < this.slots.length; i++) if (this.slots[i]!.open < this.slots[best]!.open) best = i;
    const slot = this.slots[best]!;
    slot.open++;
    const task = this.nextTask++;
    const p: Pending = { queue: [], slot: best };
    this.pending.set(task, p);
    let closed = false;
    return {
      worker: best,
      send: (msg, transfer) => this.slots[best]!.worker.postMessage({ ...msg, task }, transfer ?? []),
      next: () => {
        if (p.queue.length) return Promise.resolve(p.queue.shift()!);
        if (p.failure) return Promise.reject(p.failure);
        return new Promise<WorkerMessage>((resolve, reject) => (p.waiter = { resolve, reject }));
      },
      close: () => {
        if (closed) return;
        closed = true;
        this.pending.delete(task);
        this.slots[best]!.open--;
        this.slots[best]!.worker.postMessage({ op: 'drop', task });
      },
    };
  }

  async destroy(): Promise<void> {
    const workers = this.slots.splice(0).map((s) => s.worker);
    for (const w of workers) w.removeAllListeners('exit');
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

let shared: ChunkPool | undefined;

/** The process's pool, made on first use. */
export function chunkPool(): ChunkPool {
  shared ??= new ChunkPool();
  return shared;
}
