import { defineSearchAttributeKey, SearchAttributeType, type SearchAttributePair } from '@temporalio/common';
import { SEARCH_ATTRIBUTES, type OperationRequest } from '../shared/definitions.js';

const key = (name: string) => defineSearchAttributeKey(name, SearchAttributeType.KEYWORD);
export const SA = {
  sandboxId: key(SEARCH_ATTRIBUTES.sandboxId),
  snapshotId: key(SEARCH_ATTRIBUTES.snapshotId),
  accountId: key(SEARCH_ATTRIBUTES.accountId),
  operationType: key(SEARCH_ATTRIBUTES.operationType),
};

/** So operators can find an operation in the Temporal UI by sandbox, snapshot, account or type. */
export function operationSearchAttributes(req: OperationRequest): SearchAttributePair[] {
  const i = req.input as { accountId: string; sandboxId?: string; targetSandboxId?: string; snapshotId?: string };
  const pairs: SearchAttributePair[] = [
    { key: SA.accountId, value: i.accountId },
    { key: SA.operationType, value: req.type },
  ];
  const sandbox = i.sandboxId ?? i.targetSandboxId;
  if (sandbox) pairs.push({ key: SA.sandboxId, value: sandbox });
  if (i.snapshotId) pairs.push({ key: SA.snapshotId, value: i.snapshotId });
  return pairs;
}
