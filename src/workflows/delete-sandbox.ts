import type { DeleteSandboxInput } from '../shared/definitions.js';
import { catalog, hostActivities, reportStep } from './activities.js';
import { runOperation } from './operation.js';

/** Stops the sandbox's processes and removes its files. Its snapshots stay, for restores and forks. */
export async function deleteSandboxWorkflow(input: DeleteSandboxInput): Promise<{ sandbox_id: string }> {
  return runOperation(input.operationId, async () => {
    const { control } = hostActivities(input.hostQueue);
    await reportStep(input.operationId, 'deleting');
    await control.destroySandbox(input.sandboxId);
    await catalog.setSandboxState(input.sandboxId, 'deleted');
    return { sandbox_id: input.sandboxId };
  }, input.deadlineSeconds);
}
