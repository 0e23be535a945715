import { defineSearchAttributeKey, SearchAttributeType, type SearchAttributePair } from '@temporalio/common';
import { SEARCH_ATTRIBUTES } from '../shared/definitions.js';
import { operationOf, type OperationRequest } from './registry.js';

const key = (name: string) => defineSearchAttributeKey(name, SearchAttributeType.KEYWORD);
export const SA = {
  sandboxId: key(SEARCH_ATTRIBUTES.sandboxId),
  snapshotId: key(SEARCH_ATTRIBUTES.snapshotId),
  accountId: key(SEARCH_ATTRIBUTES.accountId),
  operationType: key(SEARCH_ATTRIBUTES.operationType),
};

/** So operators can find an operation in the Temporal UI by sandbox, snapshot, account or type. */
export function operationSearchAttributes(req: OperationRequest): SearchAttributePair[] {
  const def = operationOf(req);
  const pairs: SearchAttributePair[] = [
    { key: SA.accountId, value: req.input.accountId },
    { key: SA.operationType, value: req.type },
    { key: SA.sandboxId, value: def.sandboxOf(req.input) },
  ];
  const snapshot = def.snapshotOf?.(req.input);
  if (snapshot) pairs.push({ key: SA.snapshotId, value: snapshot });
  return pairs;
}
