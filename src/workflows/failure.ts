import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure, isCancellation, TemporalFailure } from '@temporalio/workflow';
import { isErrorCode } from '../shared/errors.js';

export interface FailureInfo {
  code: string;
  message: string;
}

/** The API-facing code and message of a failure, digging through activity/child wrappers. */
export function describeFailure(err: unknown): FailureInfo {
  if (isCancellation(err)) return { code: 'cancelled', message: 'the operation was cancelled' };
  let cur: unknown = err;
  while (cur instanceof ActivityFailure || cur instanceof ChildWorkflowFailure) cur = cur.cause;
  if (cur instanceof ApplicationFailure) {
    const code = cur.type && (isErrorCode(cur.type) || cur.type === 'injected_fault') ? cur.type : 'internal';
    return { code, message: cur.message };
  }
  if (cur instanceof TemporalFailure) return { code: 'internal', message: cur.message };
  return { code: 'internal', message: err instanceof Error ? err.message : String(err) };
}

export function failureCode(err: unknown): string {
  return describeFailure(err).code;
}
