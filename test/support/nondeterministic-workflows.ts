// A deliberately changed createSnapshotWorkflow: it calls an activity the recorded history never
// saw first. Replaying a real history against it must fail, which proves the replay check bites.
import { proxyActivities } from '@temporalio/workflow';
import type { SharedActivities } from '../../src/activities/index.js';

const { getSandboxState } = proxyActivities<SharedActivities>({ startToCloseTimeout: '10 seconds' });

export async function createSnapshotWorkflow(input: { sandboxId: string }): Promise<void> {
  await getSandboxState(input.sandboxId);
  await getSandboxState(input.sandboxId);
}
