import type { AppContext } from './context.js';
import { CagedError } from '../shared/errors.js';

export async function forkSandbox(_ctx: AppContext, _accountId: string, _snapshotId: string, _idle?: number): Promise<{ sandbox: unknown; operation: string }> {
  throw new CagedError('invalid_input', 'fork is not yet available');
}
