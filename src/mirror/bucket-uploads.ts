import { parseDigest } from '../oci/digest.js';
import type { BlobStore } from '../store/blob-store.js';
import type { Bucket } from '../store/bucket.js';
import type { Catalogue } from '../store/catalogue.js';
import { UploadQueueTable, type PendingRow, type PendingUpload } from '../store/upload-queue.js';
import type { Logger } from '../log.js';

const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 60_000;
/** Uploads at once: enough to keep a bucket busy, few enough not to starve clients of the disk. */
const PARALLEL = 2;

/**
 * Writes what this replica fetched from upstream to the shared bucket, after it is committed (and
 * verified) locally. The queue is in SQLite: an upload that fails is retried with backoff until
 * the bucket takes it, across restarts, so the bucket coming back loses nothing.
 */
export class BucketUploads {
  readonly table: UploadQueueTable;
  private running = 0;
  private retryAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private backoff = RETRY_FIRST_MS;
  private readonly inProgress = new Set<string>();
  private readonly sending = new Set<Promise<void>>();
  private idleWaiters: Array<() => void> = [];
  private closed = false;

  constructor(
    private readonly bucket: Bucket,
    private readonly store: BlobStore,
    private readonly catalogue: Catalogue,
    private readonly log: Logger,
  ) {
    this.table = new UploadQueueTable(catalogue.db);
  }

  /** Queues an upload (once per object) and starts it if the bucket is not known to be down. */
  enqueue(item: PendingUpload): void {
    this.table.add(item);
    this.pump();
  }

  /** Uploads left by an earlier run, then anything enqueued. */
  start(): void {
    this.pump();
  }

  pending(): number {
    return this.table.count();
  }

  /** Resolves when nothing is queued (tests, graceful shutdown). */
  idle(): Promise<void> {
    if (this.table.count() === 0 && this.running === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Starts nothing more and waits for the uploads under way; what is left stays queued for the next start. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await Promise.allSettled([...this.sending]);
  }

  private pump(): void {
    if (this.closed) return;
    const wait = this.retryAt - Date.now();
    if (wait > 0) {
      this.timer ??= setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, wait).unref();
      return;
    }
    while (this.running < PARALLEL) {
      const row = this.table.next(PARALLEL * 2).find((r) => !this.inProgress.has(r.key));
      if (!row) break;
      this.running++;
      this.inProgress.add(row.key);
      const sent: Promise<void> = this.upload(row).finally(() => {
        this.running--;
        this.inProgress.delete(row.key);
        this.sending.delete(sent);
        if (this.running === 0 && this.table.count() === 0) for (const w of this.idleWaiters.splice(0)) w();
        this.pump();
      });
      this.sending.add(sent);
    }
  }

  private async upload(row: PendingRow): Promise<void> {
    try {
      const done = await this.send(row.item);
      this.table.remove(row.key);
      this.backoff = RETRY_FIRST_MS;
      if (!done) this.log.warn('nothing to upload to the bucket: no longer held locally', { item: row.key });
    } catch (e) {
      const message = (e as Error).message;
      this.table.noteFailure(row.key, message);
      // The bucket is down or refusing: hold every upload back, then try again.
      this.retryAt = Date.now() + this.backoff;
      this.log.warn('upload to the shared bucket failed; will retry', { item: row.key, attempt: row.attempts + 1, retryInMs: this.backoff, error: message });
      this.backoff = Math.min(this.backoff * 2, RETRY_MAX_MS);
    }
  }

  /**
   * Sends one item now, outside the queue (import writes in its own order). False when the local
   * tier no longer holds it (evicted, gc'd): nothing to send. Throws BucketUnavailableError.
   */
  async send(item: PendingUpload): Promise<boolean> {
    if (item.kind === 'tag') {
      const tag = this.catalogue.getTag(item.repo, item.tag);
      if (!tag) return false;
      await this.bucket.putTag(item.repo, item.tag, { digest: tag.digest, checkedAt: tag.checked_at });
      return true;
    }
    if (item.kind === 'referrers') {
      const list = this.catalogue.referrers.upstreamList(item.repo, item.subject);
      const subject = parseDigest(item.subject);
      if (!list || !subject.ok) return false;
      await this.bucket.putReferrers(item.repo, subject.digest, list);
      return true;
    }
    const d = parseDigest(item.digest);
    if (!d.ok) return false;
    if (item.kind === 'blob') {
      const row = this.catalogue.getBlob(item.digest);
      if (!row || (await this.store.size(d.digest)) !== row.size) return false;
      await this.bucket.putBlobFile(d.digest, this.store.pathOf(d.digest), row.size);
      return true;
    }
    const manifest = this.catalogue.getManifest(item.repo, item.digest);
    const bytes = manifest && (await this.store.read(d.digest));
    if (!manifest || !bytes) return false;
    await this.bucket.putManifest(item.repo, d.digest, { bytes, mediaType: manifest.media_type, platform: manifest.platform ?? undefined });
    return true;
  }
}
