import { createHmac } from 'node:crypto';
import { safeEqual } from './ids.js';

/**
 * Download URLs for the fs store, which cannot presign: the API serves /v1/downloads/<key> when
 * the HMAC over (key, expiry) matches. The signature is the credential, so no API key is needed.
 */
export function signDownload(secret: string, baseUrl: string, key: string, expiresAt: number): string {
  const sig = createHmac('sha256', secret).update(`${key}\n${expiresAt}`).digest('base64url');
  return `${baseUrl.replace(/\/$/, '')}/v1/downloads/${key.split('/').map(encodeURIComponent).join('/')}?expires=${expiresAt}&sig=${sig}`;
}

export type DownloadCheck = 'ok' | 'expired' | 'bad_signature';

export function checkDownload(secret: string, key: string, expires: string | undefined, sig: string | undefined, now = Date.now()): DownloadCheck {
  if (!expires || !sig || !/^\d{1,15}$/.test(expires)) return 'bad_signature';
  const expected = createHmac('sha256', secret).update(`${key}\n${Number(expires)}`).digest('base64url');
  if (!safeEqual(expected, sig)) return 'bad_signature';
  return Number(expires) * 1000 < now ? 'expired' : 'ok';
}
