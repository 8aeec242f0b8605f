// The shared tier against a real S3 server (the run's Ceph RADOS Gateway): the bucket's layout,
// write-once objects, and uploads that survive the bucket being down and a restart.
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BucketUploads } from '../../src/mirror/bucket-uploads.js';
import { manifestRecord } from '../../src/mirror/records.js';
import { digestOf, parseDigest, type Digest } from '../../src/oci/digest.js';
import { parseManifest } from '../../src/oci/manifest.js';
import { BlobStore } from '../../src/store/blob-store.js';
import { Bucket, BucketUnavailableError } from '../../src/store/bucket.js';
import { Catalogue } from '../../src/store/catalogue.js';
import { createLogger } from '../../src/log.js';
import { freshBucket, s3Client } from '../support/s3.js';

const log = createLogger('silent');
const rgw = inject('s3');
const s3 = s3Client(rgw);
let bucketName: string;
let dir: string;

const digest = (bytes: Buffer): Digest => {
  const p = parseDigest(digestOf(bytes));
  if (!p.ok) throw new Error(p.reason);
  return p.digest;
};
const bucketAt = (endpoint: string, prefix = 'mirror/') =>
  new Bucket({ endpoint, region: rgw.region, bucket: bucketName, prefix, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });

beforeAll(async () => {
  bucketName = await freshBucket(s3, 'bucket-test');
  dir = mkdtempSync(join(tmpdir(), 'sm-bucket-'));
});
afterAll(() => {
  s3.destroy();
  rmSync(dir, { recursive: true, force: true });
});

describe('Bucket on Ceph RGW', () => {
  it('keeps blobs under their digest, serves ranges of them, and never rewrites one', async () => {
    const bucket = bucketAt(rgw.endpoint);
    const store = new BlobStore(join(dir, 'a'));
    await store.init();
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    const d = digest(bytes);
    await store.put(d, bytes);
    expect(await bucket.blobSize(d)).toBeUndefined();
    expect(await bucket.blob(d)).toBeUndefined();
    await bucket.putBlobFile(d, store.pathOf(d), bytes.length);
    const modified = async () => {
      for await (const o of bucket.list(`blobs/sha256/${d.hex}`)) return o.modified.getTime();
      throw new Error('not listed');
    };
    const first = await modified();
    await new Promise((r) => setTimeout(r, 1100)); // S3 keeps whole seconds
    await bucket.putBlobFile(d, store.pathOf(d), bytes.length); // already there: not rewritten, only renewed for gc
    expect(await modified()).toBeGreaterThan(first);
    expect(await bucket.blobSize(d)).toBe(bytes.length);
    const whole = await bucket.blob(d);
    expect(whole!.size).toBe(bytes.length);
    expect(Buffer.concat(await whole!.body.toArray()).equals(bytes)).toBe(true);
    const tail = await bucket.blob(d, 1_000_000);
    expect(tail).toMatchObject({ size: bytes.length, offset: 1_000_000 });
    expect(Buffer.concat(await tail!.body.toArray()).equals(bytes.subarray(1_000_000))).toBe(true);
    const keys = [];
    for await (const o of bucket.list('blobs/')) keys.push(o);
    expect(keys).toEqual([expect.objectContaining({ key: `blobs/sha256/${d.hex}`, size: bytes.length })]);
    bucket.close();
  });

  it('keeps manifests byte for byte with their media type and platform, and tag records', async () => {
    const bucket = bucketAt(rgw.endpoint);
    const bytes = Buffer.from('{"schemaVersion":2,  "mediaType":"application/vnd.oci.image.manifest.v1+json"}\n');
    const d = digest(bytes);
    await bucket.putManifest('docker.io/library/alpine', d, { bytes, mediaType: 'application/vnd.oci.image.manifest.v1+json', platform: 'linux/arm/v7' });
    expect(await bucket.manifest('docker.io/library/alpine', d)).toEqual({ bytes, mediaType: 'application/vnd.oci.image.manifest.v1+json', platform: 'linux/arm/v7' });
    // Written again by another replica: renewed, with its media type and platform kept.
    await bucket.putManifest('docker.io/library/alpine', d, { bytes, mediaType: 'application/vnd.oci.image.manifest.v1+json', platform: 'linux/arm/v7' });
    expect(await bucket.manifest('docker.io/library/alpine', d)).toEqual({ bytes, mediaType: 'application/vnd.oci.image.manifest.v1+json', platform: 'linux/arm/v7' });
    expect(await bucket.manifest('docker.io/library/other', d)).toBeUndefined();
    expect(await bucket.tag('docker.io/library/alpine', '3.20')).toBeUndefined();
    await bucket.putTag('docker.io/library/alpine', '3.20', { digest: d.value, checkedAt: 1234 });
    await bucket.putTag('docker.io/library/alpine', '3.20', { digest: d.value, checkedAt: 5678 }); // tags move
    expect(await bucket.tag('docker.io/library/alpine', '3.20')).toEqual({ digest: d.value, checkedAt: 5678 });
    await bucket.delete(['tags/docker.io/library/alpine/3.20']);
    expect(await bucket.tag('docker.io/library/alpine', '3.20')).toBeUndefined();
    bucket.close();
  });

  it('says the bucket is unreachable, naming it and no credential, rather than that it is empty', async () => {
    const down = bucketAt('http://127.0.0.1:1');
    const d = digest(Buffer.from('x'));
    const e = await down.blobSize(d).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BucketUnavailableError);
    expect((e as Error).message).toMatch(/shared bucket failed/);
    expect((e as Error).message).not.toContain(rgw.secretAccessKey);
    // Then it is not asked again for a moment: a blackholed bucket must not cost every request a time-out.
    const again = await down.manifest('r', d).catch((x: unknown) => x);
    expect((again as Error).message).toMatch(/shared bucket failed.*not asked again for a few seconds/);
    const missing = new Bucket({ ...bucketAt(rgw.endpoint).config, bucket: 'no-such-bucket-here' });
    await expect(missing.blob(d)).rejects.toBeInstanceOf(BucketUnavailableError);
    await expect(missing.check()).rejects.toThrow(/"no-such-bucket-here" does not exist/);
    await expect(bucketAt(rgw.endpoint).check()).resolves.toBeUndefined();
    const wrongKey = new Bucket({ ...bucketAt(rgw.endpoint).config, secretAccessKey: 'not-the-secret-key-at-all' });
    const refused = await wrongKey.check().catch((x: Error) => x);
    expect(refused).toBeInstanceOf(BucketUnavailableError);
    expect((refused as Error).message).not.toContain('not-the-secret-key-at-all');
    wrongKey.close();
    down.close();
    missing.close();
  });
});

describe('BucketUploads', () => {
  it('keeps uploads queued in SQLite while the bucket is down, and sends them all after a restart', async () => {
    const data = join(dir, 'uploads');
    const store = new BlobStore(data);
    await store.init();
    let catalogue = new Catalogue(join(data, 'mirror.db'));
    const layer = randomBytes(512 * 1024);
    const ld = digest(layer);
    await store.put(ld, layer);
    catalogue.addBlob(ld.value, layer.length);
    const mbytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: ld.value, size: layer.length }, layers: [] }));
    const md = digest(mbytes);
    const parsed = parseManifest(mbytes, 'application/vnd.oci.image.manifest.v1+json');
    if (!parsed.ok) throw new Error(parsed.reason);
    await store.put(md, mbytes);
    const repo = 'registry.test/team/app';
    catalogue.addManifest(manifestRecord({ repo, digest: md.value, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: mbytes.length, manifest: parsed.manifest, platform: 'linux/amd64' }));
    catalogue.setTag(repo, 'v1', md.value);

    const down = bucketAt('http://127.0.0.1:1', 'queued/');
    const failing = new BucketUploads(down, store, catalogue, log);
    failing.enqueue({ kind: 'blob', digest: ld.value });
    failing.enqueue({ kind: 'manifest', repo, digest: md.value });
    failing.enqueue({ kind: 'tag', repo, tag: 'v1' });
    failing.enqueue({ kind: 'blob', digest: ld.value }); // once per object
    await expect.poll(() => failing.table.next(10).some((r) => r.attempts > 0), { timeout: 15_000 }).toBe(true);
    expect(failing.pending()).toBe(3);
    expect(failing.table.next(10)[0]!.lastError).toMatch(/shared bucket failed/);
    expect(failing.table.holdsBlob(ld.value)).toBe(true);
    failing.close();
    down.close();
    catalogue.close();

    // The process restarts; the bucket is back.
    catalogue = new Catalogue(join(data, 'mirror.db'));
    const bucket = bucketAt(rgw.endpoint, 'queued/');
    const uploads = new BucketUploads(bucket, store, catalogue, log);
    expect(uploads.pending()).toBe(3);
    uploads.start();
    await uploads.idle();
    expect(uploads.pending()).toBe(0);
    const blob = await bucket.blob(ld);
    expect(Buffer.concat(await blob!.body.toArray()).equals(layer)).toBe(true);
    expect(await bucket.manifest(repo, md)).toEqual({ bytes: mbytes, mediaType: 'application/vnd.oci.image.manifest.v1+json', platform: 'linux/amd64' });
    expect(await bucket.tag(repo, 'v1')).toMatchObject({ digest: md.value });
    const raw = await s3.send(new GetObjectCommand({ Bucket: bucketName, Key: `queued/blobs/sha256/${ld.hex}` }));
    expect(Number(raw.ContentLength)).toBe(layer.length);
    uploads.close();
    bucket.close();
    catalogue.close();
  });
});
