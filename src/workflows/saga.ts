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

  add(name: string, fn: Compensation): () => void {
    const entry = { name, fn };
    this.steps.push(entry);
    return () => {
      const i = this.steps.indexOf(entry);
      if (i >= 0) this.steps.splice(i, 1);
    };
  }

  async compensate(why: FailureInfo): Promise<string[]> {
    const failed: string[] = [];
    await CancellationScope.nonCancellable(async () => {
      for (const step of [...this.steps].reverse()) {
        try {
          await step.fn(why);
        } catch {
          failed.push(step.name);
        }
      }
    });
    this.steps.length = 0;
    return failed;
  }
}
