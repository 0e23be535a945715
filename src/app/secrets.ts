import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/** A secret kept in the data directory, so that `caged dev` keeps the same one across restarts. */
export function persistedSecret(dataDir: string, name: string, make: () => string = () => randomBytes(32).toString('base64url')): string {
  const file = path.join(dataDir, name);
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    const value = make();
    fs.mkdirSync(dataDir, { recursive: true });
    fs.writeFileSync(file, `${value}\n`, { mode: 0o600 });
    return value;
  }
}
