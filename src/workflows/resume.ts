import type { ResumeInput } from '../shared/definitions.js';
import { catalog, hostActivities } from './activities.js';
import { runOperation } from './operation.js';

export async function resumeWorkflow(input: ResumeInput): Promise<{ resumed: boolean }> {
  return runOperation(input.operationId, async () => {
    const { control } = hostActivities(input.hostQueue);
    await control.resumeSandbox(input.sandboxId);
    const state = await catalog.getSandboxState(input.sandboxId);
    if (state === 'paused') await catalog.setSandboxState(input.sandboxId, 'running');
    return { resumed: state === 'paused' };
  }, input.deadlineSeconds);
}
