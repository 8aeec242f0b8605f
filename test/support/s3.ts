// S3 clients for the tests against the real RADOS Gateway (see ceph-rgw.ts and global-setup.ts).
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';

export interface S3Connection {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/**
 * An S3Client for RGW: path-style addressing (no bucket DNS names on loopback) and checksums only
 * when an operation requires them. The SDK's default trailing checksums make a PutObject whose
 * body is a stream fail on RGW with 411 MissingContentLength. Request timeouts because a full
 * memstore makes PUTs hang rather than fail.
 */
export function s3Client(rgw: S3Connection): S3Client {
  return new S3Client({
    endpoint: rgw.endpoint,
    region: rgw.region,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { connectionTimeout: 5_000, requestTimeout: 60_000 },
    maxAttempts: 1,
  });
}

/**
 * Creates a bucket named after `name` (e.g. the test file) plus a random suffix, so test files
 * sharing the one RGW of a run never see each other's objects. Returns the bucket's name.
 */
export async function freshBucket(client: S3Client, name: string): Promise<string> {
  const base = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 48) || 'test';
  const bucket = `${base}-${randomBytes(6).toString('hex')}`;
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  return bucket;
}
