/** Every workflow the worker runs; the bundler starts here. */
export { sandboxWorkflow } from './sandbox.js';
export { createSnapshotWorkflow } from './create-snapshot.js';
export { deleteSnapshotWorkflow } from './delete-snapshot.js';
export { pauseWorkflow } from './pause.js';
export { resumeWorkflow } from './resume.js';
export { deleteSandboxWorkflow } from './delete-sandbox.js';
export { restoreWorkflow } from './restore.js';
export { forkWorkflow } from './fork.js';
export { exportWorkflow } from './export.js';
export { importWorkflow } from './import.js';
export { gcWorkflow } from './gc.js';
