import { groupMembers, isStopped, readProcStat } from '../../src/sandbox/procfs.js';

/**
 * The members of a sandbox process's group that are stopped (state T/t in /proc/<pid>/stat),
 * read straight from procfs rather than through the runtime under test. Empty means every member
 * of the group runs. Throws if the process is gone.
 */
export async function stoppedGroupMembers(pid: number): Promise<number[]> {
  const stat = await readProcStat(pid);
  if (!stat) throw new Error(`sandbox process ${pid} is gone`);
  return (await groupMembers(stat.pgrp)).filter(isStopped).map((s) => s.pid);
}
