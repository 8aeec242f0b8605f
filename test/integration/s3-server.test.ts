// The run's real S3 server (Ceph RADOS Gateway, started by test/support/global-setup.ts) does
// what the S3 tier will rely on: streamed PutObject with a length, ranged GetObject, conditional
// create with If-None-Match, listing and deleting.
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  DeleteBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3ServiceException,
  type S3Client,
} from '@aws-sdk/client-s3';
import { freshBucket, s3Client } from '../support/s3.js';

const SIZE = 64 * 1024 * 1024;

async function statusOf(promise: Promise<unknown>): Promise<number | undefined> {
  try {
    await promise;
    return undefined;
  } catch (e) {
    if (e instanceof S3ServiceException) return e.$metadata.httpStatusCode;
    throw e;
  }
}

describe('S3 server (Ceph RADOS Gateway)', () => {
  let client: S3Client;
  let bucket: string;
  let dir: string;
  let file: string;

  beforeAll(async () => {
    client = s3Client(inject('s3'));
    bucket = await freshBucket(client, 's3-server');
    dir = await mkdtemp(join(tmpdir(), 's3-server-'));
    file = join(dir, 'big.bin');
    await writeFile(file, randomBytes(SIZE));
  });

  afterAll(async () => {
    if (client !== undefined && bucket !== undefined) {
      const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
      for (const o of listed.Contents ?? []) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: o.Key }));
      await client.send(new DeleteBucketCommand({ Bucket: bucket }));
      client.destroy();
    }
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('stores a 64 MiB streamed PutObject and serves a Range of it as 206 with the right bytes', async () => {
    const put = await client.send(
      new PutObjectCommand({ Bucket: bucket, Key: 'blobs/big', Body: createReadStream(file), ContentLength: SIZE }),
    );
    expect(put.$metadata.httpStatusCode).toBe(200);

    // A range across a 4 MiB stripe boundary of RGW's object layout.
    const start = 4 * 1024 * 1024 - 1000;
    const end = start + 1024 * 1024 - 1;
    const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'blobs/big', Range: `bytes=${start}-${end}` }));
    expect(got.$metadata.httpStatusCode).toBe(206);
    expect(got.ContentRange).toBe(`bytes ${start}-${end}/${SIZE}`);
    const body = Buffer.from(await got.Body!.transformToByteArray());
    const expected = Buffer.alloc(end - start + 1);
    const fh = await open(file);
    try {
      await fh.read(expected, 0, expected.length, start);
    } finally {
      await fh.close();
    }
    expect(body.length).toBe(expected.length);
    expect(body.equals(expected)).toBe(true);

    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'blobs/big' }));
    expect(head.ContentLength).toBe(SIZE);
  });

  it('honours PutObject If-None-Match: * (the second create is 412)', async () => {
    const first = await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'once', Body: 'first', IfNoneMatch: '*' }));
    expect(first.$metadata.httpStatusCode).toBe(200);
    expect(await statusOf(client.send(new PutObjectCommand({ Bucket: bucket, Key: 'once', Body: 'second', IfNoneMatch: '*' })))).toBe(412);
    const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'once' }));
    expect(await got.Body!.transformToString()).toBe('first');
  });

  it('lists and deletes objects', async () => {
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'list/a', Body: 'a' }));
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'list/b', Body: 'bb' }));
    const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'list/' }));
    expect(listed.Contents?.map((o) => [o.Key, o.Size])).toEqual([
      ['list/a', 1],
      ['list/b', 2],
    ]);

    const del = await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'list/a' }));
    expect(del.$metadata.httpStatusCode).toBe(204);
    expect(await statusOf(client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'list/a' })))).toBe(404);
    const after = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'list/' }));
    expect(after.Contents?.map((o) => o.Key)).toEqual(['list/b']);
  });
});
