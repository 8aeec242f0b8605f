import type { Logger } from '../log.js';
import type { Refusal } from '../mirror/manifests.js';
import type { Mirror, MirrorEvents } from '../mirror/mirror.js';
import { isDigestLike } from '../oci/digest.js';
import { RecentPulls, type Pull } from './activity.js';
import { Coverage } from './coverage.js';
import { History, HOUR_MS, hourOf, type Counted, type DemandRow } from './history.js';
import { UpstreamHealth, type UpstreamState } from './upstreams.js';

export interface HitRatio {
  /** Answered without upstream: from the store (stale answers included), or another replica's tier. */
  hits: number;
  misses: number;
  /** hits / (hits + misses); null before any request. */
  ratio: number | null;
}

export interface Window<T> {
  sinceStart: T;
  last24h: T;
}

export interface Overview {
  generatedAt: number;
  startedAt: number;
  store: { bytes: number; maxBytes?: number };
  counts: { repositories: number; images: number; manifests: number; blobs: number };
  /** When store bytes and counts were summed (they are kept for TOTALS_TTL_MS). */
  countedAt: number;
  cache: Window<{ manifest: HitRatio; blob: HitRatio }>;
  /** Bytes sent to clients against bytes fetched upstream: what the mirror saved. */
  transfer: Window<{ served: number; fetched: number }>;
  upstreams: UpstreamState[];
  /** With storage.s3: the shared bucket, what this replica still has to upload to it, and the other replicas. */
  replicas?: Replicas;
  recent: Pull[];
}

export interface Replicas {
  bucket: { name: string; endpoint: string; prefix: string; pendingUploads: number };
  /** Every replica known (this one first), and whether the last probe found it alive. */
  members: Array<{ url: string; self: boolean; alive: boolean }>;
}

export interface DemandWindow {
  total: number;
  byPlatform: Array<{ platform: string; count: number }>;
  byRepository: DemandRow[];
}

export interface Demand {
  last24h: DemandWindow;
  last7d: DemandWindow;
  /** Refusals per hour over the last 7 days, oldest first, every hour present (`hour` in ms). */
  perHour: Array<{ hour: number; count: number }>;
}

const DAY_MS = 24 * HOUR_MS;
/**
 * Store bytes and counts sum every row of the catalogue (100,000 blobs: tens of ms): done at most
 * this often, so that a page refreshed or several admins looking do not repeat it.
 */
const TOTALS_TTL_MS = 10_000;

interface Totals {
  at: number;
  bytes: number;
  counts: Overview['counts'];
}

/**
 * What the status page shows: the store (through the catalogue), and what the mirror saw since it
 * started or over its history (refusals, traffic, upstream health, the last pulls). It is told by
 * the mirror's events and by the HTTP layer; it never changes what the mirror serves.
 */
export class StatusService {
  readonly coverage: Coverage;
  private readonly history: History;
  private readonly pulls = new RecentPulls();
  private readonly health: UpstreamHealth;
  private readonly startedAt = Date.now();
  private totals: Totals | undefined;

  constructor(private readonly mirror: Mirror, log: Logger) {
    this.coverage = new Coverage(mirror.catalogue, mirror.allowList);
    this.history = new History(mirror.catalogue.db, (e) => log.warn('could not record the status history', { error: e.message }));
    this.health = new UpstreamHealth(mirror.router.upstreams.filter((u) => u.client).map((u) => u.name));
  }

  /** The mirror events it listens to; serve.ts passes them to Mirror.open alongside its own. */
  static events(status: () => StatusService | undefined): MirrorEvents {
    return {
      refused: (r: Refusal) => status()?.history.refused(r.repository, r.platform, r.at),
      fetched: (_route, bytes) => status()?.history.traffic('upstream', 'fetched', bytes, Date.now()),
      upstreamFailure: (name, failure, reason) => status()?.health.failed(name, failure, reason),
      upstreamAnswered: (name, answer) => status()?.health.answered(name, answer),
    };
  }

  /** A manifest or blob lookup answered (hit, miss or stale), with the bytes sent. */
  lookup(kind: 'manifest' | 'blob', result: string, bytes: number, at: number): void {
    this.history.traffic(kind, result, bytes, at);
  }

  pulled(pull: Pull): void {
    this.pulls.add(pull);
  }

  overview(now = Date.now()): Overview {
    const day = this.history.trafficSince(now - DAY_MS + HOUR_MS);
    if (!this.totals || now - this.totals.at >= TOTALS_TTL_MS) {
      this.totals = { at: now, bytes: this.mirror.catalogue.storeBytes(), counts: this.coverage.counts() };
    }
    return {
      generatedAt: now,
      startedAt: this.startedAt,
      store: { bytes: this.totals.bytes, maxBytes: this.mirror.config.storage.maxBytes },
      counts: this.totals.counts,
      countedAt: this.totals.at,
      cache: {
        sinceStart: { manifest: hitRatio(this.history.sinceStart, 'manifest'), blob: hitRatio(this.history.sinceStart, 'blob') },
        last24h: { manifest: hitRatio(day, 'manifest'), blob: hitRatio(day, 'blob') },
      },
      transfer: { sinceStart: transfer(this.history.sinceStart), last24h: transfer(day) },
      upstreams: this.health.list(),
      ...(this.mirror.shared ? { replicas: this.replicas() } : {}),
      recent: this.recent(50),
    };
  }

  private replicas(): Replicas {
    const { bucket, uploads, peers } = this.mirror.shared!;
    const membership = peers?.membership;
    const live = new Set(membership?.live() ?? []);
    return {
      bucket: { name: bucket.config.bucket, endpoint: bucket.config.endpoint ?? 'AWS S3', prefix: bucket.config.prefix, pendingUploads: uploads.pending() },
      members: (membership?.members() ?? []).map((url) => ({ url, self: membership!.isSelf(url), alive: live.has(url) })),
    };
  }

  /** The last pulls, newest first, with the platform of what they named. */
  recent(limit: number): Pull[] {
    return this.pulls.list(limit).map((p) => ({ ...p, ...this.platformOf(p.repository, p.reference) }));
  }

  demand(now = Date.now()): Demand {
    const weekStart = now - 7 * DAY_MS + HOUR_MS;
    const counts = new Map(this.history.demandPerHour(weekStart).map((h) => [h.hour, h.count]));
    const first = hourOf(weekStart);
    const perHour = Array.from({ length: 7 * 24 }, (_, i) => ({ hour: (first + i) * HOUR_MS, count: counts.get(first + i) ?? 0 }));
    return {
      last24h: demandWindow(this.history.demand(now - DAY_MS + HOUR_MS)),
      last7d: demandWindow(this.history.demand(weekStart)),
      perHour,
    };
  }

  /** Writes the pending history; before the catalogue closes. */
  close(): void {
    this.history.close();
  }

  private platformOf(repo: string, reference: string): { platform?: string } {
    const catalogue = this.mirror.catalogue;
    const digest = isDigestLike(reference) ? reference : catalogue.getTag(repo, reference)?.digest;
    if (!digest) return {};
    const m = catalogue.getManifest(repo, digest);
    // Not stored (a refused platform, say): the platform an index of the repository gives it.
    if (!m) {
      const listed = catalogue.indexEntriesFor(repo, digest).find((e) => e.platform !== null);
      return listed ? { platform: listed.platform! } : {};
    }
    return m.kind === 'index' ? { platform: 'index' } : m.platform ? { platform: m.platform } : {};
  }
}

/**
 * A miss went upstream; every other answer (hit, stale, and with replicas bucket or peer) did not.
 */
function hitRatio(counts: Map<string, Counted>, kind: string): HitRatio {
  let hits = 0;
  let misses = 0;
  for (const [key, c] of counts) {
    if (!key.startsWith(`${kind}/`)) continue;
    if (key === `${kind}/miss`) misses += c.requests;
    else hits += c.requests;
  }
  return { hits, misses, ratio: hits + misses === 0 ? null : hits / (hits + misses) };
}

function transfer(counts: Map<string, Counted>): { served: number; fetched: number } {
  let served = 0;
  for (const [key, c] of counts) if (key.startsWith('manifest/') || key.startsWith('blob/')) served += c.bytes;
  return { served, fetched: counts.get('upstream/fetched')?.bytes ?? 0 };
}

function demandWindow(rows: DemandRow[]): DemandWindow {
  const byPlatform = new Map<string, number>();
  for (const r of rows) byPlatform.set(r.platform, (byPlatform.get(r.platform) ?? 0) + r.count);
  return {
    total: rows.reduce((a, r) => a + r.count, 0),
    byPlatform: [...byPlatform].map(([platform, count]) => ({ platform, count })).sort((a, b) => b.count - a.count || a.platform.localeCompare(b.platform)),
    byRepository: rows,
  };
}
