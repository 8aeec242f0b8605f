import type { MirrorConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import { applyGc, findRoots, planGc, pushedRepositories } from './gc.js';
import type { Mirror } from '../mirror/mirror.js';
import { UploadQueueTable } from '../store/upload-queue.js';
import { prefetchImage, routeForReference } from './prefetch.js';

const EVICTION_CHECK_MS = 60_000;
/** Eviction frees down to this share of storage.maxBytes, so it does not run again at once. */
const EVICTION_TARGET = 0.9;

/** Background work of `serve`: keeping `sync` images fresh and the store under `storage.maxBytes`. */
export class Maintenance {
  private timers: NodeJS.Timeout[] = [];
  private running: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly mirror: Mirror,
    private readonly config: MirrorConfig,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.config.storage.maxBytes !== undefined) this.every(EVICTION_CHECK_MS, () => this.evictIfNeeded());
    if (!this.config.offline && (this.config.sync.images.length > 0 || this.config.sync.tagPatterns.length > 0)) {
      this.every(this.config.sync.intervalSeconds * 1000, () => this.sync(), 1000);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    await this.running.catch(() => {});
  }

  /** Runs `task` now-ish and then every `ms`, one run at a time. */
  private every(ms: number, task: () => Promise<unknown>, firstMs = ms): void {
    const tick = () => {
      if (this.stopped) return;
      this.running = this.running
        .then(task)
        .catch((e: Error) => this.log.error('background task failed', { error: e.message }))
        .finally(() => {
          if (!this.stopped) this.timers.push(setTimeout(tick, ms).unref());
        });
    };
    this.timers.push(setTimeout(tick, firstMs).unref());
  }

  /**
   * Evicts whole images, least recently pulled first, until the store is under its limit. An
   * index goes together with its children; a blob stays while any remaining image uses it;
   * content being downloaded, stored in the last minutes, or not yet uploaded to the shared
   * bucket is never touched. Only the local tier: the bucket keeps everything evicted here.
   */
  async evictIfNeeded(): Promise<number> {
    const limit = this.config.storage.maxBytes;
    if (limit === undefined) return 0;
    const { catalogue, store } = this.mirror;
    catalogue.flushTouches();
    if (catalogue.storeBytes() <= limit) return 0;
    const target = limit * EVICTION_TARGET;
    let freed = 0;
    const keepsImages = pushedRepositories(this.config.push.namespace);
    const roots = findRoots(catalogue)
      .filter((r) => !keepsImages(r.repo))
      .sort((a, b) => a.lastAccess - b.lastAccess);
    for (const root of roots) {
      if (this.stopped || catalogue.storeBytes() <= target) break;
      // Blobs the bucket does not have yet stay until uploaded: this disk holds the only copy.
      const inFlight = new UploadQueueTable(catalogue.db).pendingBlobs();
      for (const d of this.mirror.blobs.inFlight()) inFlight.add(d.digest.value);
      const plan = await planGc(catalogue, store, { evict: new Set([`${root.repo}@${root.digest}`]), inFlight, graceMs: 60_000, keepsImages });
      if (plan.manifests.length === 0) continue;
      freed += await applyGc(plan, catalogue, store);
      this.log.info('evicted an image to stay under storage.maxBytes', { repo: root.repo, digest: root.digest, freed });
    }
    return freed;
  }

  async sync(): Promise<void> {
    const refs = [...this.config.sync.images];
    for (const p of this.config.sync.tagPatterns) {
      try {
        const { route } = routeForReference(this.mirror, `${p.repository}:latest`);
        const page = await route.upstream.client!.tags(route.repo, 'n=10000');
        const tags = (JSON.parse(page.body.toString('utf8')) as { tags?: string[] | null }).tags ?? [];
        const re = new RegExp(p.pattern);
        refs.push(...tags.filter((t) => re.test(t)).map((t) => `${p.repository}:${t}`));
      } catch (e) {
        this.log.warn('sync: cannot list tags', { repository: p.repository, error: (e as Error).message });
      }
    }
    for (const ref of refs) {
      if (this.stopped) return;
      try {
        const r = await prefetchImage(this.mirror, ref);
        if (r.refused) {
          this.log.warn('sync: image skipped: not signed as the signature policy asks', { ref: r.ref, digest: r.digest, reason: r.refused });
          continue;
        }
        if (r.signature && r.signature.status !== 'verified') this.log.warn('sync: image not signed as the policy asks (warn)', { ref: r.ref, reason: r.signature.reason });
        this.log.info('sync: image fresh', { ref: r.ref, digest: r.digest, fetched: r.bytesFetched, platforms: r.platformsFetched });
      } catch (e) {
        this.log.warn('sync: image failed', { ref, error: (e as Error).message });
      }
    }
  }
}
