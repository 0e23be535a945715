import { SingleBar } from 'cli-progress';
import type { ApiClient } from './api-client.js';
import { formatBytes } from './format.js';
import type { Operation } from './types.js';

const POLL_MS = 500;
// An operation waiting behind another in its sandbox's queue is not finished either.
const UNFINISHED = new Set(['running', 'pending', 'queued']);

/** Renders operation progress on stderr: a bar, a rewritten status line, or plain lines when piped. */
class ProgressView {
  private bar?: SingleBar;
  private lastStep?: string;
  private statusShown = false;
  private readonly tty = process.stderr.isTTY === true;

  constructor(private readonly opId: string) {}

  update(op: Operation): void {
    const retrying = op.progress?.retrying;
    // A step held up by the store says so, with the store's error, instead of looking stuck.
    const step = `${op.progress?.step ?? op.status}${retrying ? ` (retrying, attempt ${retrying.attempt}: ${retrying.error})` : ''}`;
    const done = op.progress?.bytes_done ?? 0;
    const total = op.progress?.bytes_total ?? null;
    if (!this.tty) {
      if (step !== this.lastStep) process.stderr.write(`${this.opId}: ${step}\n`);
    } else if (total !== null && total > 0) {
      this.clearStatus();
      if (!this.bar) {
        this.bar = new SingleBar({
          stream: process.stderr,
          format: '{step} [{bar}] {percentage}% {doneFmt}/{totalFmt}',
          hideCursor: true,
          clearOnComplete: true,
        });
        this.bar.start(total, done, { step, doneFmt: formatBytes(done), totalFmt: formatBytes(total) });
      } else {
        this.bar.setTotal(total);
        this.bar.update(done, { step, doneFmt: formatBytes(done), totalFmt: formatBytes(total) });
      }
    } else {
      this.stopBar();
      process.stderr.write(`\r\x1b[2K${step}${done > 0 ? ` … ${formatBytes(done)}` : ''}`);
      this.statusShown = true;
    }
    this.lastStep = step;
  }

  stop(): void {
    this.stopBar();
    this.clearStatus();
  }

  private stopBar(): void {
    this.bar?.stop();
    this.bar = undefined;
  }

  private clearStatus(): void {
    if (this.statusShown) process.stderr.write('\r\x1b[2K');
    this.statusShown = false;
  }
}

/** Some endpoints wrap the operation in `{operation}`; accept both so a shape change doesn't break waiting. */
export function unwrapOperation(body: unknown): Operation {
  const b = body as { operation?: Operation } & Operation;
  return b.operation ?? b;
}

export async function waitForOperation(client: ApiClient, opId: string, opts: { quiet?: boolean } = {}): Promise<Operation> {
  const view = opts.quiet ? undefined : new ProgressView(opId);
  // The operation runs server-side; interrupting the CLI only stops watching it, so say where to look next.
  const onInterrupt = () => {
    view?.stop();
    process.stderr.write(`\noperation ${opId} continues in the background; see \`caged ops show ${opId}\`\n`);
    process.exit(130);
  };
  process.once('SIGINT', onInterrupt);
  let op: Operation;
  try {
    for (;;) {
      op = unwrapOperation(await client.request('GET', `/v1/operations/${encodeURIComponent(opId)}`));
      if (!UNFINISHED.has(op.status)) break;
      view?.update(op);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } finally {
    view?.stop();
    process.removeListener('SIGINT', onInterrupt);
  }
  if (op.status === 'failed' || op.status === 'cancelled') {
    const detail = op.error ? `: ${op.error.code ?? 'unknown'}: ${op.error.message ?? ''}` : '';
    throw new Error(`operation ${op.id ?? opId} ${op.status}${detail}`);
  }
  return op;
}
