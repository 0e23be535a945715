import { randomBytes, createHash, timingSafeEqual } from 'node:crypto';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** n characters of [a-z0-9], unbiased (rejection sampling). */
export function randomSuffix(n = 8): string {
  let out = '';
  while (out.length < n) {
    for (const b of randomBytes(n * 2)) {
      if (b < 252 && out.length < n) out += ALPHABET[b % 36];
    }
  }
  return out;
}

export const newSandboxId = () => `cage-${randomSuffix()}`;
export const newSnapshotId = () => `snap-${randomSuffix()}`;
export const newAccountId = () => `acct-${randomSuffix()}`;
export const newOperationId = (type: string) => `op-${type}-${randomSuffix(12)}`;
export const newApiKey = () => `caged_sk_${randomBytes(24).toString('base64url')}`;

export const SANDBOX_ID_RE = /^cage-[a-z0-9]{8}$/;
export const SNAPSHOT_ID_RE = /^snap-[a-z0-9]{8}$/;
/** op-<type>-<12 of a-z0-9> (newOperationId), op-pause-idle-<12 hex> (the idle timer's pauses). */
export const OPERATION_ID_RE = /^op-[a-z][a-z-]{0,40}-[a-z0-9]{12}$/;

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function safeEqual(a: string, b: string): boolean {
  const ba = Buffer.from(a);
  const bb = Buffer.from(b);
  return ba.length === bb.length && timingSafeEqual(ba, bb);
}
