import { expect } from 'vitest';
import type { TestStack } from './stack.js';
import { verifyStack, type Finding, type VerifyOptions } from '../../src/service/verify/index.js';

/**
 * The consistency checker as a test oracle: the findings for a test stack's accounts (the PostgreSQL
 * catalog is shared by the test files), with no grace period, so anything left behind counts. Call it
 * once the operations under test have settled; an empty list is a consistent stack.
 */
export function verifyTestStack(stack: TestStack, accountIds: string[], opts: Omit<VerifyOptions, 'accountIds'> = {}): Promise<Finding[]> {
  return verifyStack(stack.ctx, { graceSeconds: 0, ...opts, accountIds });
}

/**
 * The oracle after a test's operations: waits for their workflows to close (clean-up after success
 * runs before that), then expects no finding, with every ready snapshot's sha256 checked.
 */
export async function expectConsistent(stack: TestStack, accountIds: string[], operationIds: string[]): Promise<void> {
  for (const id of operationIds) await stack.client.workflow.getHandle(id).result().catch(() => {});
  expect(await verifyTestStack(stack, accountIds, { deep: true })).toEqual([]);
}
