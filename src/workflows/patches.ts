/**
 * Patch ids of workflow changes, and where each is in the SDK's lifecycle: `patched(id)` keeps the
 * old branch for workflows that started before the change; `deprecatePatch(id)` drops it; removing
 * the call follows. The rule: a patch moves on once no workflow that could take the old branch can
 * still be open. Operation workflows end by their deadline (hours at most; before deadlines existed,
 * by their activities' timeouts), so a patch of theirs moves on a day after it shipped. The sandbox
 * workflow is long-lived: its patches move on only once every sandbox workflow has continued as new
 * since (check with `temporal workflow list --query 'WorkflowType="sandboxWorkflow" AND
 * StartTime < "<ship time>" AND ExecutionStatus="Running"'`). CI replays one history per workflow type
 * recorded after each patch; histories recorded before a deprecated patch are removed with its branch.
 */

/** Catalog steps run as local activities. Deprecated in operation workflows; still `patched` in the long-lived sandbox workflow. */
export const CATALOG_LOCAL_ACTIVITIES = 'catalog-local-activities';

/** The replaced root is deleted after the operation reports success, not before. Deprecated. */
export const DISCARD_ROOT_AFTER_SUCCESS = 'discard-root-after-success';

/** Quiesce, upload and resume run as one host activity (snapshotSandbox). Deprecated. */
export const SNAPSHOT_IN_ONE_HOST_STEP = 'snapshot-in-one-host-step';

/**
 * Every operation has a deadline; at each commit point the undo steps before it are disarmed, and
 * what follows a commit (deleting a replaced snapshot, an import's upload, an old root) is
 * clean-up after success; a pause whose snapshot fails still pauses; a cancel is recorded as
 * cancelled whatever failure it caused.
 */
export const COMMIT_POINTS = 'commit-points-and-deadlines';
