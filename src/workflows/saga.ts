import { CancellationScope } from '@temporalio/workflow';
import type { FailureInfo } from './failure.js';

type Compensation = (why: FailureInfo) => Promise<unknown>;

/**
 * Undo steps, registered before the step they undo and run newest first. They run in a
 * non-cancellable scope, so a cancelled operation still rolls back; one failing undo does not
 * stop the others.
 */
export class Saga {
  private readonly steps: { name: string; fn: Compensation }[] = [];

  /** A child shares its parent's clean-ups but undoes only its own steps (a pause's snapshot). */
  constructor(private readonly cleanups: { name: string; fn: () => Promise<unknown> }[] = []) {}

  child(): Saga {
    return new Saga(this.cleanups);
  }

  /**
   * A clean-up that runs once the operation has been recorded as succeeded, so the caller does not
   * wait for it (deleting a replaced root). It runs non-cancellable, in order; the workflow, and so
   * the sandbox's next operation, still waits for it.
   */
  afterSuccess(name: string, fn: () => Promise<unknown>): void {
    this.cleanups.push({ name, fn });
  }

  /** Runs the clean-ups; returns the names of those that failed. */
  async cleanUp(): Promise<string[]> {
    return runAll(this.cleanups.splice(0), (fn) => fn());
  }

  add(name: string, fn: Compensation): () => void {
    const entry = { name, fn };
    this.steps.push(entry);
    return () => {
      const i = this.steps.indexOf(entry);
      if (i >= 0) this.steps.splice(i, 1);
    };
  }

  /**
   * The commit point: what is done so far is final, so none of the undo steps registered until now
   * may run any more. Whatever follows is either undone by steps registered after this, or clean-up.
   */
  commit(): void {
    this.steps.splice(0);
  }

  hasCompensations(): boolean {
    return this.steps.length > 0;
  }

  async compensate(why: FailureInfo): Promise<string[]> {
    return runAll(this.steps.splice(0).reverse(), (fn) => fn(why));
  }
}

/** Runs every step in order, non-cancellable; one failing does not stop the rest. Returns the names of those that failed. */
async function runAll<F>(steps: { name: string; fn: F }[], call: (fn: F) => Promise<unknown>): Promise<string[]> {
  const failed: string[] = [];
  await CancellationScope.nonCancellable(async () => {
    for (const step of steps) {
      try {
        await call(step.fn);
      } catch {
        failed.push(step.name);
      }
    }
  });
  return failed;
}
