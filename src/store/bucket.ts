import type { Readable } from 'node:stream';
import { createReadStream } from 'node:fs';
import { createRequire } from 'node:module';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Digest } from '../oci/digest.js';

export interface BucketConfig {
  endpoint?: string;
  region: string;
  bucket: string;
  prefix: string;
  forcePathStyle: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
}

/** The bucket could not be reached or failed (network, 5xx, timeout): the tier is down, not empty. */
export class BucketUnavailableError extends Error {
  override name = 'BucketUnavailableError';
}

/** The bucket answers but is not usable as configured (missing, or the credentials refused): a set-up error. */
export class BucketConfigError extends BucketUnavailableError {
  override name = 'BucketConfigError';
}

export interface StoredManifest {
  bytes: Buffer;
  mediaType: string;
  /** The platform the writing replica found for an image manifest (os/arch[/variant]). */
  platform?: string;
}

/** What upstream listed as attached to a subject (referrers API and scheme tags), and when it was asked. */
export interface ReferrersRecord {
  descriptors: unknown[];
  tags: unknown[];
  checkedAt: number;
}

export interface TagRecord {
  digest: string;
  /** When upstream last confirmed the tag (ms since the epoch): replicas share its freshness. */
  checkedAt: number;
}

/**
 * After the bucket failed to answer, requests fail at once for this long instead of each waiting
 * for its own time-out: a bucket that drops packets would otherwise add seconds to every miss.
 */
const DOWN_HOLD_MS = 5_000;
/** A request to the bucket that takes longer than this counts as the bucket being down. */
const REQUEST_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 3_000;

type S3Sdk = typeof import('@aws-sdk/client-s3');
let loadedSdk: S3Sdk | undefined;

/**
 * The AWS SDK takes ~20 MiB of memory once loaded, so only a mirror that has a bucket loads it:
 * when the first Bucket is made, not when this module is imported (as every mirror does).
 */
function s3Sdk(): S3Sdk {
  return (loadedSdk ??= createRequire(import.meta.url)('@aws-sdk/client-s3') as S3Sdk);
}

/**
 * The shared tier: one S3 bucket that every replica reads and writes.
 *   <prefix>blobs/<alg>/<hex>               blob bytes, content-addressed like the local store
 *   <prefix>manifests/<repo>/<alg>/<hex>    manifest bytes as upstream sent them; Content-Type is
 *                                            the media type, metadata `platform` the image's platform
 *   <prefix>tags/<repo>/<tag>               {"digest", "checkedAt"}
 *   <prefix>referrers/<repo>/<alg>/<hex>    {"descriptors", "tags", "checkedAt"}: upstream's list for a subject
 * Names and digests are validated by the caller before they reach a key. Every object is written
 * with one PUT of known length, which S3 makes visible whole or not at all: a reader never sees a
 * partial object, and content-addressed keys are written only once (If-None-Match).
 */
export class Bucket {
  readonly client: S3Client;
  private readonly sdk = s3Sdk();
  private downUntil = 0;
  private downBecause = '';

  constructor(readonly config: BucketConfig) {
    this.client = new this.sdk.S3Client({
      endpoint: config.endpoint,
      region: config.region,
      forcePathStyle: config.forcePathStyle,
      credentials: config.accessKeyId && config.secretAccessKey ? { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey } : undefined,
      // Ceph RGW 16 refuses streamed uploads with the SDK's default trailing checksums (411).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS },
      maxAttempts: 2,
    });
  }

  blobKey(d: Digest): string {
    return `${this.config.prefix}blobs/${d.algorithm}/${d.hex}`;
  }

  manifestKey(repo: string, d: Digest): string {
    return `${this.config.prefix}manifests/${repo}/${d.algorithm}/${d.hex}`;
  }

  tagKey(repo: string, tag: string): string {
    return `${this.config.prefix}tags/${repo}/${tag}`;
  }

  /** Start-up check: the bucket exists and these credentials may use it (a HEAD cannot tell a missing bucket from a missing object). */
  async check(): Promise<void> {
    try {
      await this.client.send(new this.sdk.HeadBucketCommand({ Bucket: this.config.bucket }));
    } catch (e) {
      const status = statusOf(e);
      if (status === 404) throw new BucketConfigError(`the shared bucket "${this.config.bucket}" does not exist at ${this.config.endpoint ?? 'AWS S3'}`);
      if (status === 403) throw new BucketConfigError(`the shared bucket "${this.config.bucket}" refused these credentials (HTTP 403)`);
      throw asUnavailable(e);
    }
  }

  /** The blob's size, or undefined when the bucket lacks it. */
  async blobSize(d: Digest): Promise<number | undefined> {
    return this.call(async () => (await this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.config.bucket, Key: this.blobKey(d) }))).ContentLength);
  }

  /** The blob's bytes from `offset` on, or undefined when the bucket lacks it. */
  async blob(d: Digest, offset = 0): Promise<{ body: Readable; size: number; offset: number } | undefined> {
    return this.call(async () => {
      const res = await this.client.send(
        new this.sdk.GetObjectCommand({ Bucket: this.config.bucket, Key: this.blobKey(d), Range: offset > 0 ? `bytes=${offset}-` : undefined }),
      );
      const total = offset > 0 ? Number(/\/(\d+)$/.exec(res.ContentRange ?? '')?.[1]) : res.ContentLength;
      if (total === undefined || !Number.isFinite(total)) throw new BucketUnavailableError(`bucket answered ${this.blobKey(d)} without its length`);
      return { body: res.Body as Readable, size: total, offset };
    });
  }

  /** Uploads a verified local file; an object already there (another replica's) is left as it is. */
  async putBlobFile(d: Digest, path: string, size: number): Promise<void> {
    await this.putOnce(this.blobKey(d), () => createReadStream(path), size);
  }

  async manifest(repo: string, d: Digest): Promise<StoredManifest | undefined> {
    return this.call(async () => {
      const res = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: this.config.bucket, Key: this.manifestKey(repo, d) }));
      const bytes = Buffer.from(await res.Body!.transformToByteArray());
      return { bytes, mediaType: res.ContentType ?? '', platform: res.Metadata?.platform || undefined };
    });
  }

  async putManifest(repo: string, d: Digest, m: StoredManifest): Promise<void> {
    await this.putOnce(this.manifestKey(repo, d), () => m.bytes, m.bytes.length, m.mediaType, m.platform ? { platform: m.platform } : undefined);
  }

  async tag(repo: string, tag: string): Promise<TagRecord | undefined> {
    return this.call(async () => {
      const res = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: this.config.bucket, Key: this.tagKey(repo, tag) }));
      const parsed = JSON.parse(await res.Body!.transformToString()) as Partial<TagRecord>;
      if (typeof parsed.digest !== 'string' || typeof parsed.checkedAt !== 'number') return undefined;
      return { digest: parsed.digest, checkedAt: parsed.checkedAt };
    });
  }

  referrersKey(repo: string, subject: Digest): string {
    return `${this.config.prefix}referrers/${repo}/${subject.algorithm}/${subject.hex}`;
  }

  async referrers(repo: string, subject: Digest): Promise<ReferrersRecord | undefined> {
    return this.call(async () => {
      const res = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: this.config.bucket, Key: this.referrersKey(repo, subject) }));
      const parsed = JSON.parse(await res.Body!.transformToString()) as Partial<ReferrersRecord>;
      if (!Array.isArray(parsed.descriptors) || !Array.isArray(parsed.tags) || typeof parsed.checkedAt !== 'number') return undefined;
      return { descriptors: parsed.descriptors, tags: parsed.tags, checkedAt: parsed.checkedAt };
    });
  }

  /** Like a tag: overwritten by whichever replica asked upstream last. */
  async putReferrers(repo: string, subject: Digest, record: ReferrersRecord): Promise<void> {
    await this.putJson(this.referrersKey(repo, subject), record);
  }

  /** Tags move: overwritten, last writer wins (each writer has just asked upstream). */
  async putTag(repo: string, tag: string, record: TagRecord): Promise<void> {
    await this.putJson(this.tagKey(repo, tag), record);
  }

  private async putJson(key: string, value: unknown): Promise<void> {
    const body = Buffer.from(JSON.stringify(value));
    await this.call(() => this.client.send(new this.sdk.PutObjectCommand({ Bucket: this.config.bucket, Key: key, Body: body, ContentLength: body.length, ContentType: 'application/json' })));
  }

  /** Every object under `under` (relative to the prefix), with its size and last change. */
  async *list(under: string): AsyncGenerator<{ key: string; size: number; modified: Date }> {
    let token: string | undefined;
    do {
      const page = await this.call(() =>
        this.client.send(new this.sdk.ListObjectsV2Command({ Bucket: this.config.bucket, Prefix: `${this.config.prefix}${under}`, ContinuationToken: token })),
      );
      for (const o of page?.Contents ?? []) {
        if (o.Key) yield { key: o.Key.slice(this.config.prefix.length), size: o.Size ?? 0, modified: o.LastModified ?? new Date(0) };
      }
      token = page?.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** Deletes objects by key relative to the prefix, a thousand per request. */
  async delete(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000).map((k) => ({ Key: `${this.config.prefix}${k}` }));
      await this.call(() => this.client.send(new this.sdk.DeleteObjectsCommand({ Bucket: this.config.bucket, Delete: { Objects: batch, Quiet: true } })));
    }
  }

  /** The bytes of any object by key (relative to the prefix), or undefined when it is not there. */
  async read(key: string): Promise<Buffer | undefined> {
    return this.call(async () => {
      const res = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: this.config.bucket, Key: `${this.config.prefix}${key}` }));
      return Buffer.from(await res.Body!.transformToByteArray());
    });
  }

  close(): void {
    this.client.destroy();
  }

  /**
   * Renews an object's last-modified time (a copy onto itself, type and metadata kept): a replica
   * that finds the content it would write already there says "in use again" this way, so that a
   * `gc` running meanwhile sees it as fresh and keeps it through its grace period.
   */
  async touch(key: string): Promise<void> {
    const Key = key.startsWith(this.config.prefix) ? key : `${this.config.prefix}${key}`;
    await this.call(async () => {
      const head = await this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.config.bucket, Key }));
      await this.client.send(
        new this.sdk.CopyObjectCommand({
          Bucket: this.config.bucket,
          Key,
          CopySource: `${this.config.bucket}/${Key.split('/').map(encodeURIComponent).join('/')}`,
          MetadataDirective: 'REPLACE',
          ContentType: head.ContentType,
          Metadata: head.Metadata,
        }),
      );
    });
  }

  /** One PUT that never replaces an object already there (content-addressed: it is the same bytes). */
  private async putOnce(
    key: string,
    body: () => Readable | Buffer,
    size: number,
    contentType?: string,
    metadata?: Record<string, string>,
  ): Promise<void> {
    this.failFastWhileDown();
    try {
      await this.client.send(
        new this.sdk.PutObjectCommand({ Bucket: this.config.bucket, Key: key, Body: body(), ContentLength: size, ContentType: contentType, Metadata: metadata, IfNoneMatch: '*' }),
      );
      this.downUntil = 0;
    } catch (e) {
      if (statusOf(e) === 412) return this.touch(key); // written already: renew it against a gc under way
      throw this.noteDown(e, asUnavailable(e, key));
    }
  }

  /** Runs a request; a missing object is undefined, any other failure BucketUnavailableError. */
  private async call<T>(fn: () => Promise<T>): Promise<T | undefined> {
    this.failFastWhileDown();
    try {
      const value = await fn();
      this.downUntil = 0;
      return value;
    } catch (e) {
      // A missing bucket is a broken setup, not an empty tier.
      if (statusOf(e) === 404 && (e as Error).name !== 'NoSuchBucket') return undefined;
      throw this.noteDown(e, asUnavailable(e));
    }
  }

  private failFastWhileDown(): void {
    if (Date.now() < this.downUntil) throw new BucketUnavailableError(`${this.downBecause} (not asked again for a few seconds)`);
  }

  /** A failure to answer at all (network, time-out, 5xx) holds requests back for a moment; a refusal does not. */
  private noteDown(cause: unknown, e: BucketUnavailableError): BucketUnavailableError {
    const status = statusOf(cause);
    if (status === undefined || status >= 500) {
      this.downUntil = Date.now() + DOWN_HOLD_MS;
      this.downBecause = e.message;
    }
    return e;
  }
}

function statusOf(e: unknown): number | undefined {
  return loadedSdk && e instanceof loadedSdk.S3ServiceException ? e.$metadata.httpStatusCode : undefined;
}

/** What a person needs: the bucket, what failed, never a credential (the SDK's messages carry none). */
function asUnavailable(e: unknown, key?: string): BucketUnavailableError {
  if (e instanceof BucketUnavailableError) return e;
  const status = statusOf(e);
  const what = e instanceof Error ? (e.name && e.name !== 'Error' ? `${e.name}: ${e.message}` : e.message) : String(e);
  return new BucketUnavailableError(`the shared bucket failed${key ? ` on ${key}` : ''}${status ? ` (HTTP ${status})` : ''}: ${what}`);
}
