/**
 * Patch ids of workflow changes still in their `patched` phase. A patch's old branch may go (first
 * `deprecatePatch`, then removal) once no workflow that started before it can still be open: an
 * operation is bounded by its deadline, a sandbox workflow continues as new within days.
 */

/**
 * Every operation has a deadline; at each commit point the undo steps before it are disarmed, and
 * what follows a commit (deleting a replaced snapshot, an import's upload, an old root) is
 * clean-up after success; a pause whose snapshot fails still pauses; a cancel is recorded as
 * cancelled whatever failure it caused.
 */
export const COMMIT_POINTS = 'commit-points-and-deadlines';
