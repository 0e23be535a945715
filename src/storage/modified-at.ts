import fs from 'node:fs/promises';
import type { BlobInfo, BlobStore } from './blob-store.js';

/** When the object was written: what the listing says, or for an fs store, its file's mtime; undefined once it is gone. */
export async function modifiedAt(store: BlobStore, obj: BlobInfo): Promise<Date | undefined> {
  if (obj.modifiedAt || !store.local) return obj.modifiedAt;
  try {
    return (await fs.stat(await store.local.objectFile(obj.key))).mtime;
  } catch {
    return undefined; // gone since the listing
  }
}
