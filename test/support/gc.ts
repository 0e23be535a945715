import type { TestStack } from './stack.js';
import { randomSuffix } from '../../src/shared/ids.js';
import type { GcResult } from '../../src/workflows/gc.js';

/**
 * One collector pass on the stack's task queue, scoped to one account: test files share the
 * database, and other files' packs are in their own stores.
 */
export function gcPass(stack: TestStack, accountId: string): Promise<GcResult> {
  return stack.client.workflow.execute('gcWorkflow', {
    taskQueue: stack.config.temporal.taskQueue,
    workflowId: `gc-test-${randomSuffix(8)}`,
    args: [{ accountIds: [accountId] }],
  }) as Promise<GcResult>;
}
