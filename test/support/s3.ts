import { inject } from 'vitest';
import { ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import type { TestStack } from './stack.js';

/** Keys of the multipart uploads open under a stack's prefix, read straight from the S3 server. */
export async function openUploadKeys(stack: TestStack): Promise<string[]> {
  const s3 = new S3Client({
    endpoint: inject('s3Endpoint'),
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
  try {
    const prefix = `${stack.config.temporal.taskQueue}/`;
    const page = await s3.send(new ListMultipartUploadsCommand({ Bucket: inject('s3Bucket'), Prefix: prefix }));
    return (page.Uploads ?? []).map((u) => u.Key!.slice(prefix.length));
  } finally {
    s3.destroy();
  }
}

/** How many multipart uploads are open for exactly this key of the stack. */
export async function openUploads(stack: TestStack, key: string): Promise<number> {
  return (await openUploadKeys(stack)).filter((k) => k === key).length;
}

/** The snapshot's packs (what its bytes are uploaded as) with the multipart uploads open for each. */
export async function packUploads(stack: TestStack, snapshotId: string): Promise<{ key: string; state: string; sizeBytes: number; open: number }[]> {
  const open = await openUploadKeys(stack);
  const packs = await stack.db.selectFrom('packs').select(['object_key', 'state', 'size_bytes']).where('writer_snapshot_id', '=', snapshotId).execute();
  return packs.map((p) => ({ key: p.object_key, state: p.state, sizeBytes: Number(p.size_bytes), open: open.filter((k) => k === p.object_key).length }));
}
