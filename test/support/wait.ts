export const MiB = 1024 * 1024;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 50 ms until it holds; throws once `timeoutMs` has passed without it, naming `what` if given. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 30_000, what?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(what ? `timed out waiting for ${what}` : 'condition not met in time');
    await sleep(50);
  }
}
