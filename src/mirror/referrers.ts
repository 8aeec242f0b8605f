import { parseDigest } from '../oci/digest.js';
import { OciError, ociErrors } from '../oci/errors.js';
import { parseManifest } from '../oci/manifest.js';
import {
  asReferrerDescriptor,
  COSIGN_SUFFIXES,
  cosignTag,
  fallbackTag,
  parseReferrersList,
  referrersIndex,
  type ReferrerDescriptor,
} from '../oci/referrers.js';
import { BucketUnavailableError, type ReferrersRecord } from '../store/bucket.js';
import type { Catalogue } from '../store/catalogue.js';
import type { ReferrerRow } from '../store/referrers-catalogue.js';
import { isUpstreamError, UpstreamError } from '../upstream/errors.js';
import type { Logger } from '../log.js';
import type { ManifestService } from './manifests.js';
import type { Route } from './routing.js';
import type { SharedTier } from './shared-tier.js';
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
  private readonly flights = new SingleFlight<Attachments>();

  constructor(
    private readonly catalogue: Catalogue,
    private readonly manifests: ManifestService,
    private readonly policy: ReferrersPolicy,
    private readonly log: Logger,
    private readonly shared?: SharedTier,
  ) {}

  /**
   * No referrers is an empty index, not a 404; only a pulled-through subject whose upstream
   * cannot be asked, with nothing stored, gets a 404 (as from a registry without the API).
   */
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
    return (await this.attachments(route, subject)).descriptors;
  }

  /**
   * What is attached to `subject`: its referrers, and which tag-schema tags exist for it
   * (`sha256-<hex>` and cosign's `.sig`, `.att`, `.sbom`), upstream's (kept with the tag TTL)
   * and the store's.
   */
  async attachments(route: Route, subject: string): Promise<Attachments> {
    const merged = new Map<string, ReferrerDescriptor>();
    const tags = new Map<string, string | undefined>(this.catalogue.schemeTagsFor(route.key, subject).map((t) => [t.tag, t.digest]));
    if (!route.local) {
      const upstream = await this.upstreamAttachments(route, subject);
      for (const d of upstream.descriptors) merged.set(d.digest, d);
      for (const t of upstream.tags) if (!tags.has(t.tag)) tags.set(t.tag, t.digest);
    }
    for (const d of await this.storedFallback(route, subject)) if (!merged.has(d.digest)) merged.set(d.digest, d);
    for (const r of this.catalogue.referrers.list(route.key, subject)) merged.set(r.digest, fromRow(r));
    const tagList = [...tags].sort(([a], [b]) => (a < b ? -1 : 1)).map(([tag, digest]) => (digest ? { tag, digest } : { tag }));
    return { descriptors: [...merged.values()], tags: tagList };
  }

  /**
   * How many attachments upstream has for a subject this mirror does not carry, for counts
   * only: its list is kept like any list, its content is never fetched.
   */
  async countUpstream(route: Route, subject: string): Promise<number> {
    if (!this.canFetch(route)) return 0;
    // Kept like any list, so a re-run within the TTL asks upstream nothing.
    const found = await this.upstreamAttachments(route, subject, false).catch(() => undefined);
    if (!found) return 0;
    // A cosign tag and a referrer may be the same manifest: count each once.
    const digests = new Set(found.descriptors.map((d) => d.digest));
    let untracked = 0;
    for (const t of found.tags) {
      if (t.tag === fallbackTag(subject)) continue;
      if (t.digest) digests.add(t.digest);
      else untracked++;
    }
    return digests.size + untracked;
  }

  private canFetch(route: Route): boolean {
    return !this.policy.offline && route.upstream.client !== undefined;
  }

  private async upstreamAttachments(route: Route, subject: string, store = true): Promise<Attachments> {
    let stored = this.catalogue.referrers.upstreamList(route.key, subject);
    const fresh = (list: { checkedAt: number }) => Date.now() - list.checkedAt < this.policy.ttlMs;
    if (!(stored && fresh(stored))) {
      // Another replica may have asked upstream since: its answer is in the bucket.
      const theirs = await this.sharedList(route, subject);
      if (theirs && theirs.checkedAt > (stored?.checkedAt ?? 0)) {
        this.catalogue.referrers.saveUpstreamList(route.key, subject, theirs.descriptors, theirs.tags, theirs.checkedAt);
        stored = theirs;
      }
    }
    const storedState = { descriptors: (stored?.descriptors ?? []) as ReferrerDescriptor[], tags: (stored?.tags ?? []) as SchemeTag[] };
    if ((stored && fresh(stored)) || !this.canFetch(route)) return storedState;
    return this.flights.run(`${route.key}@${subject}`, async () => {
      try {
        const found = await this.askUpstream(route, subject, store);
        this.catalogue.referrers.saveUpstreamList(route.key, subject, found.descriptors, found.tags);
        this.shared?.uploads.enqueue({ kind: 'referrers', repo: route.key, subject });
        return found;
      } catch (e) {
        if (stored) {
          this.log.warn('upstream failed; serving the stored referrers list (stale-if-error)', { repo: route.key, subject, error: (e as Error).message });
          return storedState;
        }
        // Nothing stored: the fallback tag alone, if upstream serves it (the API may be what fails).
        const fallback = await this.storedFallback(route, subject, true).catch(() => []);
        if (fallback.length > 0) return { descriptors: fallback, tags: [{ tag: fallbackTag(subject) }] };
        // Or what the store holds (imported, or pulled by digest).
        const local = this.catalogue.referrers.list(route.key, subject).length + this.catalogue.schemeTagsFor(route.key, subject).length;
        if (local > 0) return { descriptors: [], tags: [] };
        // Answer as a registry without the API: a 404, after which clients look up the tag themselves.
        const reason = toClientError(e, 'MANIFEST_UNKNOWN').message;
        throw new OciError(404, 'MANIFEST_UNKNOWN', `the referrers of ${route.key}@${subject} could not be had from upstream (${reason}); try tag ${fallbackTag(subject)}`);
      }
    });
  }

  /** The list another replica stored in the bucket, if any (a bucket that is down counts as none). */
  private async sharedList(route: Route, subject: string): Promise<ReferrersRecord | undefined> {
    const d = parseDigest(subject);
    if (!this.shared || route.local || !d.ok) return undefined;
    try {
      return await this.shared.bucket.referrers(route.key, d.digest);
    } catch (e) {
      if (!(e instanceof BucketUnavailableError)) throw e;
      this.log.warn('shared bucket unavailable; referrers list not looked up there', { repo: route.key, subject, error: e.message });
      return undefined;
    }
  }

  /**
   * Upstream's referrers API (where it has one), merged with its fallback tag's index; and which
   * scheme tags upstream has (HEADs: free against Docker Hub's pull limit). With `store`, the
   * fallback index is pulled through the manifest service (verified, kept with the tag TTL).
   */
  private async askUpstream(route: Route, subject: string, store: boolean): Promise<Attachments> {
    const client = route.upstream.client!;
    const merged = new Map<string, ReferrerDescriptor>();
    const bytes = await client.referrers(route.repo, subject);
    if (bytes) {
      const parsed = parseReferrersList(bytes);
      if (!parsed.ok) throw new UpstreamError('bad_response', `upstream's referrers list for ${route.key}@${subject} is not an OCI index (${parsed.reason})`);
      for (const d of parsed.descriptors) merged.set(d.digest, d);
    }
    const schemeTags = [fallbackTag(subject), ...COSIGN_SUFFIXES.map((s) => cosignTag(subject, s))];
    const tags: SchemeTag[] = [];
    for (const tag of schemeTags) {
      try {
        const head = await client.manifest(route.repo, tag, 'HEAD');
        tags.push(head.digest ? { tag, digest: head.digest } : { tag });
      } catch (e) {
        if (!isUpstreamError(e, 'not_found')) throw e;
      }
    }
    if (tags.some((t) => t.tag === fallbackTag(subject))) {
      let listed: ReferrerDescriptor[] = [];
      if (store) {
        listed = await this.storedFallback(route, subject, true);
      } else {
        const res = await client.manifest(route.repo, fallbackTag(subject), 'GET');
        const parsed = parseReferrersList(res.bytes!);
        if (parsed.ok) listed = parsed.descriptors;
      }
      for (const d of listed) if (!merged.has(d.digest)) merged.set(d.digest, d);
    }
    return { descriptors: [...merged.values()], tags };
  }

  /**
   * The entries of the fallback tag's index: the stored one (the tag as it stands), or with
   * `fetch` through the manifest service (pulled through, verified, with the tag's TTL).
   */
  private async storedFallback(route: Route, subject: string, fetch = false): Promise<ReferrerDescriptor[]> {
    const tag = fallbackTag(subject);
    if (!fetch && !this.catalogue.getTag(route.key, tag)) return [];
    let m;
    try {
      m = await this.manifests.get(route, tag, true);
    } catch (e) {
      if (!fetch || (e instanceof OciError && e.status === 404)) return [];
      throw e;
    }
    const parsed = parseManifest(m.bytes!, m.mediaType);
    if (!parsed.ok || parsed.manifest.kind !== 'index') return [];
    return parsed.manifest.children.map(asReferrerDescriptor);
  }
}

export interface Attachments {
  descriptors: ReferrerDescriptor[];
  /** Tag-schema tags that exist for the subject: `sha256-<hex>`, `.sig`, `.att`, `.sbom`. */
  tags: SchemeTag[];
}

export interface SchemeTag {
  tag: string;
  /** What it points at, where known. */
  digest?: string;
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
