/**
 * Tasks of a data mover run side by side, at most `limit` at once (a snapshot's scans, a restore's
 * batches of files). A task's failure goes to `onError` (the mover keeps the first and stops);
 * `run` checks with `beforeStart` once a place is free, so nothing new starts after one.
 */
export class TaskLimiter {
  private readonly running = new Set<Promise<void>>();

  constructor(
    private readonly limit: number,
    private readonly onError: (err: unknown) => void,
  ) {}

  get size(): number {
    return this.running.size;
  }

  /** Waits for a free place, then starts `work` without waiting for it. */
  async run(work: () => Promise<void>, beforeStart?: () => void): Promise<void> {
    while (this.running.size >= this.limit) await Promise.race(this.running);
    beforeStart?.();
    const p = work().catch(this.onError);
    this.running.add(p);
    void p.finally(() => this.running.delete(p));
  }

  /** Until one running task has ended; at once when none runs. */
  async next(): Promise<void> {
    if (this.running.size) await Promise.race(this.running);
  }

  /** Until every task has ended. */
  async drain(): Promise<void> {
    while (this.running.size) await Promise.allSettled([...this.running]);
  }
}
