import { parseDigest } from '../oci/digest.js';
import { OciError, ociErrors } from '../oci/errors.js';
import { parseManifest } from '../oci/manifest.js';
import {
  asReferrerDescriptor,
  fallbackTag,
  parseReferrersList,
  referrersIndex,
  type ReferrerDescriptor,
} from '../oci/referrers.js';
import type { Catalogue } from '../store/catalogue.js';
import type { ReferrerRow } from '../store/referrers-catalogue.js';
import { UpstreamError } from '../upstream/errors.js';
import type { Logger } from '../log.js';
import type { ManifestService } from './manifests.js';
import type { Route } from './routing.js';
import { SingleFlight } from './singleflight.js';
import { toClientError } from './upstream-errors.js';

export interface ReferrersPage {
  /** An OCI image index listing the referrers (possibly none). */
  body: Buffer;
  descriptors: ReferrerDescriptor[];
  /** Set when the list was filtered by `artifactType` (the spec's `OCI-Filters-Applied`). */
  filtersApplied?: string;
}

export interface ReferrersPolicy {
  offline: boolean;
  /** How long an upstream's list is served before upstream is asked again (the tag TTL). */
  ttlMs: number;
}

/**
 * The OCI 1.1 Referrers API, for pushed and pulled-through repositories alike: the stored
 * manifests that name the digest as their `subject`, and for a pulled-through repository what
 * upstream lists: its referrers API where it has one, and always its fallback tag
 * `sha256-<hex>` (the spec's tag schema). Both, because go-containerregistry (cosign, crane)
 * only looks at the fallback tag after a 404: a 200 that left out the tag's entries would hide
 * the signatures pushed by clients of registries without the API.
 */
export class ReferrersService {
  private readonly flights = new SingleFlight<ReferrerDescriptor[]>();

  constructor(
    private readonly catalogue: Catalogue,
    private readonly manifests: ManifestService,
    private readonly policy: ReferrersPolicy,
    private readonly log: Logger,
  ) {}

  /** Never a 404 for a valid digest the mirror or upstream knows of: no referrers is an empty index. */
  async list(route: Route, digestText: string, artifactType?: string): Promise<ReferrersPage> {
    const parsed = parseDigest(digestText);
    if (!parsed.ok) throw ociErrors.digestInvalid(parsed.reason, { digest: digestText.slice(0, 80) });
    const subject = parsed.digest.value;
    // A referrer follows its subject: those of a platform this mirror does not carry are refused.
    this.manifests.assertMirrored(route, subject);
    const filter = artifactType === undefined || artifactType === '' ? undefined : artifactType;
    const all = await this.descriptors(route, subject);
    const descriptors = filter === undefined ? all : all.filter((d) => d.artifactType === filter);
    return { body: referrersIndex(descriptors), descriptors, filtersApplied: filter === undefined ? undefined : 'artifactType' };
  }

  /** Every referrer of `subject`: upstream's list, overridden by what the stored manifests say of themselves. */
  async descriptors(route: Route, subject: string): Promise<ReferrerDescriptor[]> {
    const merged = new Map<string, ReferrerDescriptor>();
    if (!route.local) for (const d of await this.upstreamDescriptors(route, subject)) merged.set(d.digest, d);
    for (const r of this.catalogue.referrers.list(route.key, subject)) merged.set(r.digest, fromRow(r));
    return [...merged.values()];
  }

  private canFetch(route: Route): boolean {
    return !this.policy.offline && route.upstream.client !== undefined;
  }

  private async upstreamDescriptors(route: Route, subject: string): Promise<ReferrerDescriptor[]> {
    const stored = this.catalogue.referrers.upstreamList(route.key, subject);
    const storedList = (stored?.descriptors ?? []) as ReferrerDescriptor[];
    if ((stored && Date.now() - stored.checkedAt < this.policy.ttlMs) || !this.canFetch(route)) {
      return [...storedList, ...(await this.fallbackDescriptors(route, subject).catch(() => []))];
    }
    return this.flights.run(`${route.key}@${subject}`, async () => {
      try {
        const list = await this.askUpstream(route, subject);
        this.catalogue.referrers.saveUpstreamList(route.key, subject, list);
        return list;
      } catch (e) {
        if (stored) {
          this.log.warn('upstream failed; serving the stored referrers list (stale-if-error)', { repo: route.key, subject, error: (e as Error).message });
          return [...storedList, ...(await this.fallbackDescriptors(route, subject).catch(() => []))];
        }
        // The API failed and nothing is stored: the fallback tag alone, if it can be had.
        const fallback = await this.fallbackDescriptors(route, subject).catch(() => undefined);
        if (fallback && fallback.length > 0) return fallback;
        if (this.catalogue.referrers.list(route.key, subject).length > 0) return [];
        // Answer as a registry without the API: a 404, after which clients look up the tag themselves.
        const reason = toClientError(e, 'MANIFEST_UNKNOWN').message;
        throw new OciError(404, 'MANIFEST_UNKNOWN', `the referrers of ${route.key}@${subject} could not be had from upstream (${reason}); try tag ${fallbackTag(subject)}`);
      }
    });
  }

  /** Upstream's referrers API (where it has one) and its fallback tag, merged. */
  private async askUpstream(route: Route, subject: string): Promise<ReferrerDescriptor[]> {
    const merged = new Map<string, ReferrerDescriptor>();
    const bytes = await route.upstream.client!.referrers(route.repo, subject);
    if (bytes) {
      const parsed = parseReferrersList(bytes);
      if (!parsed.ok) throw new UpstreamError('bad_response', `upstream's referrers list for ${route.key}@${subject} is not an OCI index (${parsed.reason})`);
      for (const d of parsed.descriptors) merged.set(d.digest, d);
    }
    for (const d of await this.fallbackDescriptors(route, subject)) if (!merged.has(d.digest)) merged.set(d.digest, d);
    return [...merged.values()];
  }

  /** The entries of the fallback tag's index, through the manifest service (stored, with the tag's TTL). */
  private async fallbackDescriptors(route: Route, subject: string): Promise<ReferrerDescriptor[]> {
    let m;
    try {
      m = await this.manifests.get(route, fallbackTag(subject), true);
    } catch (e) {
      if (e instanceof OciError && e.status === 404) return [];
      throw e;
    }
    const parsed = parseManifest(m.bytes!, m.mediaType);
    if (!parsed.ok || parsed.manifest.kind !== 'index') return [];
    return parsed.manifest.children.map(asReferrerDescriptor);
  }
}

function fromRow(r: ReferrerRow): ReferrerDescriptor {
  return {
    mediaType: r.media_type,
    digest: r.digest,
    size: r.size,
    ...(r.artifact_type ? { artifactType: r.artifact_type } : {}),
    ...(r.annotations ? { annotations: JSON.parse(r.annotations) as Record<string, string> } : {}),
  };
}
