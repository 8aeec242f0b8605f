import { join, resolve } from 'node:path';
import { LRUCache } from 'lru-cache';
import type { MirrorConfig } from '../config/schema.js';
import { upstreamNames } from '../config/schema.js';
import { PlatformAllowList } from '../oci/platform.js';
import { BlobStore } from '../store/blob-store.js';
import { Bucket, BucketConfigError } from '../store/bucket.js';
import { Catalogue } from '../store/catalogue.js';
import { Membership } from '../cluster/members.js';
import { UpstreamClient } from '../upstream/client.js';
import { upstreamTransport } from '../upstream/transport.js';
import type { UpstreamAnswer } from '../upstream/client.js';
import type { UpstreamFailure } from '../upstream/errors.js';
import type { Logger } from '../log.js';
import { BlobService, type BlobEvents } from './blobs.js';
import { BucketUploads } from './bucket-uploads.js';
import { PeerClient } from './peers.js';
import type { SharedTier } from './shared-tier.js';
import { ManifestService, type ManifestEvents } from './manifests.js';
import { ReferrersService } from './referrers.js';
import { Router, type Upstream } from './routing.js';
import { TagService } from './tags.js';

const DOCKER_HUB_HOSTS = new Set(['registry-1.docker.io', 'docker.io', 'index.docker.io']);
/** Hot manifests stay in memory: they are small and asked for on every pull. */
const MANIFEST_CACHE_BYTES = 64 * 1024 * 1024;

export interface MirrorEvents extends ManifestEvents, BlobEvents {
  /** A request to `upstream` failed; `reason` is the error's message (it names no credentials). */
  upstreamFailure?(upstream: string, failure: UpstreamFailure, reason: string): void;
  /** `upstream` answered a request (with any status; failures are also told to upstreamFailure). */
  upstreamAnswered?(upstream: string, answer: UpstreamAnswer): void;
}

/** The mirror: store, catalogue, upstream clients and the services that join them. */
export class Mirror {
  private constructor(
    readonly config: MirrorConfig,
    readonly store: BlobStore,
    readonly catalogue: Catalogue,
    readonly router: Router,
    readonly manifests: ManifestService,
    readonly blobs: BlobService,
    readonly tags: TagService,
    readonly allowList: PlatformAllowList,
    readonly referrers: ReferrersService,
    /** With storage.s3: the bucket replicas share, its upload queue, and the other replicas. */
    readonly shared?: SharedTier,
  ) {}

  static async open(config: MirrorConfig, log: Logger, events: MirrorEvents = {}): Promise<Mirror> {
    const dataDir = resolve(config.dataDir);
    const store = new BlobStore(dataDir, { flushQuietMs: config.blobs.flushQuietMs });
    await store.init();
    const catalogue = new Catalogue(join(dataDir, 'mirror.db'));
    catalogue.onError = (e) => log.warn('could not record last-access times', { error: e.message });
    const allowList = PlatformAllowList.parse(config.platforms);
    const upstreams: Upstream[] = config.upstreams.map((u) => {
      const names = upstreamNames(u).map((n) => n.toLowerCase());
      const name = u.aliases[0] ?? new URL(u.url).host;
      return {
        name,
        names,
        libraryPrefix: u.libraryPrefix ?? names.some((n) => DOCKER_HUB_HOSTS.has(n)),
        client: new UpstreamClient(
          {
            url: u.url,
            credentials: u.username !== undefined && u.password !== undefined ? { username: u.username, password: u.password } : undefined,
            timeouts: {
              connectMs: config.upstream.connectTimeoutMs,
              headersMs: config.upstream.headersTimeoutMs,
              bodyIdleMs: config.upstream.bodyIdleTimeoutMs,
            },
            attempts: config.upstream.attempts,
            maxManifestBytes: config.limits.maxManifestBytes,
            onFailure: (failure, error) => events.upstreamFailure?.(name, failure, error.message),
            onAnswer: (answer) => events.upstreamAnswered?.(name, answer),
            // Its CA, client certificate, `insecure` and proxy (else the environment's, as Go reads it).
            transport: upstreamTransport(u, config.upstream.proxy),
          },
          log,
        ),
      };
    });
    const router = new Router(
      upstreams,
      pickDefault(upstreams, config.defaultUpstream),
      config.push.enabled ? config.push.namespace : undefined,
    );
    const shared = config.storage.s3 ? await openSharedTier(config, store, catalogue, log) : undefined;
    const cache = new LRUCache<string, Buffer>({ maxSize: MANIFEST_CACHE_BYTES, sizeCalculation: (b) => b.length || 1 });
    const manifests = new ManifestService(
      store,
      catalogue,
      cache,
      {
        allowList,
        notMirrored: config.notMirroredResponse,
        offline: config.offline,
        tagTtlMs: config.tags.ttlSeconds * 1000,
      },
      log,
      events,
      shared,
    );
    const blobs = new BlobService(
      store,
      catalogue,
      { offline: config.offline, requireReference: config.blobs.requireReference, readAhead: config.blobs.readAhead },
      log,
      events,
      shared,
    );
    const tags = new TagService(catalogue, config.offline, log);
    const referrers = new ReferrersService(catalogue, manifests, { offline: config.offline, ttlMs: config.tags.ttlSeconds * 1000 }, log, shared);
    return new Mirror(config, store, catalogue, router, manifests, blobs, tags, allowList, referrers, shared);
  }

  /**
   * Lets downloads in flight finish for up to `graceMs`, aborts the rest (their temp files are
   * removed, nothing half-written is recorded), then closes upstream connections and SQLite.
   */
  async close(graceMs = 10_000): Promise<void> {
    this.blobs.stopReadingAhead();
    this.store.flushGate.openNow(); // flushes put off until a pause run now
    const running = this.blobs.inFlight();
    const settled = Promise.allSettled(running.map((d) => d.finished));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), graceMs)));
    if ((await Promise.race([settled, timedOut])) === 'timeout') {
      for (const d of running) d.abort();
      await settled;
    }
    clearTimeout(timer);
    // Uploads under way finish (the queue keeps the rest for the next start); then nothing touches SQLite.
    await this.shared?.uploads.close();
    await this.shared?.peers?.membership.stop();
    await this.shared?.peers?.close();
    this.shared?.bucket.close();
    await Promise.all(this.router.upstreams.map((u) => u.client?.close()));
    this.catalogue.close();
    await this.store.dispose();
  }
}

/**
 * The bucket (checked once: a missing bucket or refused credentials stop start-up; a bucket that is
 * merely down is not fatal, the local tier serves meanwhile), its upload queue, and with
 * `cluster` the membership of the replicas and the signed client that asks them.
 */
async function openSharedTier(config: MirrorConfig, store: BlobStore, catalogue: Catalogue, log: Logger): Promise<SharedTier> {
  const s3 = config.storage.s3!;
  const bucket = new Bucket({ ...s3 });
  try {
    await bucket.check();
  } catch (e) {
    if (e instanceof BucketConfigError) {
      bucket.close();
      throw e;
    }
    log.warn('the shared bucket is unreachable; serving from the local tier until it answers', { error: (e as Error).message });
  }
  const uploads = new BucketUploads(bucket, store, catalogue, log);
  let peers: PeerClient | undefined;
  if (config.cluster) {
    const c = config.cluster;
    let client: PeerClient | undefined;
    const membership = new Membership({
      self: c.advertise,
      peers: c.peers,
      dns: c.dns,
      probeIntervalMs: c.probeIntervalMs,
      probe: (m) => client!.probe(m),
    });
    peers = client = new PeerClient(c.secret, membership, c.peerTimeoutMs);
  }
  return { bucket, uploads, peers };
}

function pickDefault(upstreams: Upstream[], name: string | undefined): Upstream {
  if (name) {
    const found = upstreams.find((u) => u.names.includes(name.toLowerCase()));
    if (found) return found;
  }
  return upstreams[0]!;
}
