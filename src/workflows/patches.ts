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

/**
 * Catalog steps run as local activities. Still `patched` in the long-lived sandbox workflow; in
 * operation workflows it was deprecated on 2026-12-02 and its calls removed on 2026-12-04.
 */
export const CATALOG_LOCAL_ACTIVITIES = 'catalog-local-activities';

/*
 * Retired (calls removed on 2026-12-04, two days after their deprecation shipped; histories that
 * recorded them without the deprecated flag went with them): `discard-root-after-success` (the
 * replaced root is deleted after the operation reports success) and `snapshot-in-one-host-step`
 * (quiesce, upload and resume as one host activity).
 */

/**
 * Every operation has a deadline; at each commit point the undo steps before it are disarmed, and
 * what follows a commit (deleting a replaced snapshot, an import's upload, an old root) is
 * clean-up after success; a pause whose snapshot fails still pauses; a cancel is recorded as
 * cancelled whatever failure it caused. Shipped 2026-12-02; deprecated on 2026-12-04 (old branches
 * removed); its call may go once this deprecation has shipped a day.
 */
export const COMMIT_POINTS = 'commit-points-and-deadlines';

/**
 * The catalog names a snapshot's objects (src/storage/layout.ts, recorded on its row at the
 * reservation): a deletion removes all of them in one step (deleteSnapshotObjects), and an import
 * converts into the key its reservation recorded. Shipped 2026-12-04.
 */
export const OBJECT_LAYOUT = 'object-layout';
