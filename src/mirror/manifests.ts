import type { LRUCache } from 'lru-cache';
import { digestOf, isDigestLike, parseDigest, type Digest } from '../oci/digest.js';
import { OciError, ociErrors } from '../oci/errors.js';
import { parseManifest, type ImageManifest, type ParsedManifest } from '../oci/manifest.js';
import { isImageConfigType } from '../oci/media-types.js';
import { formatPlatform, parsePlatform, platformOfImageConfig, type Platform, type PlatformAllowList } from '../oci/platform.js';
import { isValidTag } from '../oci/reference.js';
import { subjectOfTag } from '../oci/referrers.js';
import type { BlobStore } from '../store/blob-store.js';
import { BucketUnavailableError, type TagRecord } from '../store/bucket.js';
import type { Catalogue, ManifestRow } from '../store/catalogue.js';
import { UpstreamError } from '../upstream/errors.js';
import { discard } from '../upstream/client.js';
import type { Logger } from '../log.js';
import { absentFromPushedIndex } from './local-absent.js';
import { notMirroredError, type NotMirroredResponse } from './not-mirrored.js';
import { manifestRecord } from './records.js';
import type { Route } from './routing.js';
import type { SharedTier } from './shared-tier.js';
import { SingleFlight } from './singleflight.js';
import { canServeStale, toClientError } from './upstream-errors.js';

export interface ManifestResult {
  digest: string;
  mediaType: string;
  size: number;
  /** The exact stored bytes; absent when the caller asked for headers only. */
  bytes?: Buffer;
  /** Where the answer came from: the store, upstream just now, the store after upstream failed, or the shared bucket. */
  source: 'store' | 'upstream' | 'stale' | 'bucket';
}

export interface ManifestPolicy {
  allowList: PlatformAllowList;
  notMirrored: NotMirroredResponse;
  offline: boolean;
  tagTtlMs: number;
}

export interface ManifestEvents {
  /** A manifest (or image config) was fetched from upstream and stored. */
  fetched?(route: Route, bytes: number): void;
  /** A request was refused with the not-mirrored error: the demand for a platform not carried. */
  refused?(refusal: Refusal): void;
}

export interface Refusal {
  /** The mirror-side repository key, e.g. `docker.io/library/alpine`. */
  repository: string;
  platform: string;
  at: number;
}

/** What one request learnt of the shared bucket on its way (for the error it may end with). */
interface BucketTrail {
  bucketDown?: boolean;
}

interface Fetched {
  row: ManifestRow;
  bytes: Buffer;
}

/**
 * Manifests and tags, fetched through from upstream and kept byte for byte: the bytes served are
 * the bytes upstream sent, never re-serialised, verified against their digest before storing.
 */
export class ManifestService {
  private readonly flights = new SingleFlight<Fetched>();

  constructor(
    private readonly store: BlobStore,
    private readonly catalogue: Catalogue,
    private readonly cache: LRUCache<string, Buffer>,
    private readonly policy: ManifestPolicy,
    private readonly log: Logger,
    private readonly events: ManifestEvents = {},
    private readonly shared?: SharedTier,
  ) {}

  async get(route: Route, reference: string, wantBody: boolean): Promise<ManifestResult> {
    const trail: BucketTrail = {};
    try {
      if (isDigestLike(reference)) {
        const parsed = parseDigest(reference);
        if (!parsed.ok) throw ociErrors.digestInvalid(parsed.reason, { digest: clip(reference) });
        return await this.byDigest(route, parsed.digest, wantBody, trail);
      }
      if (!isValidTag(reference)) {
        throw ociErrors.manifestUnknown(`"${clip(reference)}" is neither a valid tag nor a digest`);
      }
      return await this.byTag(route, reference, wantBody, trail);
    } catch (e) {
      // Upstream failed too, or the mirror is offline: the client hears that both tiers were asked.
      if (trail.bucketDown && e instanceof OciError && e.status !== 403) {
        throw new OciError(e.status, e.code, `${e.message} (the shared bucket is unreachable too)`, e.detail, e.headers);
      }
      throw e;
    }
  }

  private async byDigest(route: Route, digest: Digest, wantBody: boolean, trail: BucketTrail): Promise<ManifestResult> {
    const row = this.catalogue.getManifest(route.key, digest.value);
    if (row) {
      const served = await this.serveStored(row, wantBody);
      if (served) {
        return served;
      }
    }
    // A pushed sparse index lists it but it was never pushed: the not-mirrored error, naming the platform.
    if (route.local) {
      const absent = absentFromPushedIndex(this.catalogue, route, digest.value, this.policy.notMirrored);
      if (absent) throw this.refused(route, absent);
    }
    this.assertNotExcluded(route, digest.value);
    const shared = await this.fromBucket(route, digest, trail);
    if (shared) return result(shared, wantBody, 'bucket');
    if (!this.canFetch(route)) {
      throw ociErrors.manifestUnknown(`manifest ${digest.value} of ${route.key} is not in this mirror${this.offlineNote(route)}`);
    }
    return result(await this.fetch(route, digest.value), wantBody);
  }

  private async byTag(route: Route, tag: string, wantBody: boolean, trail: BucketTrail): Promise<ManifestResult> {
    const ref = `${route.key}:${tag}`;
    let known = this.catalogue.getTag(route.key, tag);
    if (this.shared && !route.local && !(known && this.isFresh(known.checked_at))) {
      // Another replica may have asked upstream more recently: its answer is in the bucket (a
      // signature tag of a platform this replica does not carry is refused here as from upstream).
      const scheme = subjectOfTag(tag);
      if (scheme) this.assertNotExcluded(route, scheme.subject, ref);
      const adopted = await this.tagFromBucket(route, tag, known?.checked_at ?? 0, trail);
      if (adopted) return result(adopted, wantBody, 'bucket');
      known = this.catalogue.getTag(route.key, tag);
    }
    const stored = known && this.catalogue.getManifest(route.key, known.digest);
    if (known && stored) {
      const fresh = this.isFresh(known.checked_at);
      if (fresh || !this.canFetch(route)) {
        const served = await this.serveStored(stored, wantBody);
        if (served) {
          return served;
        }
      } else {
        try {
          // Revalidate with a HEAD (free against Docker Hub's pull limit); fetch only if it moved.
          const head = await route.upstream.client!.manifest(route.repo, tag, 'HEAD');
          if (head.digest === known.digest) {
            this.catalogue.markTagChecked(route.key, tag);
            this.shared?.uploads.enqueue({ kind: 'tag', repo: route.key, tag });
            const served = await this.serveStored(stored, wantBody);
            if (served) {
              return served;
            }
          }
        } catch (e) {
          if (!canServeStale(e)) throw toClientError(e, 'MANIFEST_UNKNOWN');
          this.log.warn('upstream failed; serving the stored tag (stale-if-error)', {
            ref,
            upstream: route.upstream.name,
            error: e.message,
          });
          const served = await this.serveStored(stored, wantBody);
          if (served) return { ...served, source: 'stale' };
          throw toClientError(e, 'MANIFEST_UNKNOWN');
        }
      }
    }
    // `sha256-<hex>.sig` and the like belong to their subject: not fetched for a refused platform.
    const scheme = subjectOfTag(tag);
    if (scheme) this.assertNotExcluded(route, scheme.subject, `${route.key}:${tag}`);
    if (!this.canFetch(route)) {
      throw ociErrors.manifestUnknown(`${ref} is not in this mirror${this.offlineNote(route)}`);
    }
    try {
      return result(await this.fetch(route, tag), wantBody);
    } catch (e) {
      // Upstream failed mid-revalidation but we still hold the old content: better than nothing.
      if (known && stored && canServeStale(e)) {
        this.log.warn('upstream failed; serving the stored tag (stale-if-error)', { ref, error: e.message });
        const served = await this.serveStored(stored, wantBody);
        if (served) return { ...served, source: 'stale' };
      }
      // Another replica's record of the tag, however old, beats no answer (stale-if-error across replicas).
      if (this.shared && !route.local && (canServeStale(e) || (e instanceof OciError && (e.status >= 500 || e.status === 429)))) {
        const adopted = await this.tagFromBucket(route, tag, 0, trail, true);
        if (adopted) {
          this.log.warn('upstream failed; serving the tag another replica stored (stale-if-error)', { ref, error: (e as Error).message });
          return result(adopted, wantBody, 'stale');
        }
      }
      throw e;
    }
  }

  private isFresh(checkedAt: number): boolean {
    return Date.now() - checkedAt < this.policy.tagTtlMs;
  }

  /**
   * A tag record another replica wrote, if upstream confirmed it more recently than this replica
   * did and within the TTL (or at all, when upstream cannot be asked): the manifest it names is
   * taken from the local store or the bucket, and the tag recorded with the other's check time.
   */
  private async tagFromBucket(route: Route, tag: string, ourCheck: number, trail: BucketTrail, evenStale = false): Promise<Fetched | undefined> {
    let record: TagRecord | undefined;
    try {
      record = await this.shared!.bucket.tag(route.key, tag);
    } catch (e) {
      if (!(e instanceof BucketUnavailableError)) throw e;
      trail.bucketDown = true;
      this.log.warn('shared bucket unavailable; tag not checked there', { ref: `${route.key}:${tag}`, error: e.message });
      return undefined;
    }
    if (!record || record.checkedAt <= ourCheck) return undefined;
    if (!evenStale && !this.isFresh(record.checkedAt) && this.canFetch(route)) return undefined;
    const d = parseDigest(record.digest);
    if (!d.ok) return undefined;
    const local = this.catalogue.getManifest(route.key, d.digest.value);
    const bytes = local && (await this.serveStored(local, true))?.bytes;
    const found = local && bytes ? { row: local, bytes } : await this.fromBucket(route, d.digest, trail);
    if (!found) return undefined;
    this.catalogue.setTag(route.key, tag, d.digest.value, record.checkedAt);
    return found;
  }

  /**
   * A manifest another replica stored in the bucket: verified against its digest and judged by the
   * allow-list as if upstream had sent it, then kept locally. Undefined when the bucket lacks it,
   * holds something wrong (logged; upstream is asked instead) or is down.
   */
  private async fromBucket(route: Route, digest: Digest, trail: BucketTrail): Promise<Fetched | undefined> {
    if (!this.shared || route.local) return undefined;
    let stored;
    try {
      stored = await this.shared.bucket.manifest(route.key, digest);
    } catch (e) {
      if (!(e instanceof BucketUnavailableError)) throw e;
      trail.bucketDown = true;
      this.log.warn('shared bucket unavailable; manifest not looked up there', { repo: route.key, digest: digest.value, error: e.message });
      return undefined;
    }
    if (!stored) return undefined;
    const parsed = digestOf(stored.bytes, digest.algorithm) === digest.value ? parseManifest(stored.bytes, stored.mediaType) : undefined;
    if (!parsed?.ok) {
      this.log.error('the shared bucket holds a damaged manifest; ignoring it', { repo: route.key, digest: digest.value });
      return undefined;
    }
    const manifest = parsed.manifest;
    if (manifest.subject) this.assertNotExcluded(route, manifest.subject.digest, `${route.key}@${digest.value}`);
    let platform: Platform | undefined;
    if (manifest.kind === 'image') {
      this.assertNotExcluded(route, digest.value);
      const listed = this.catalogue.indexEntriesFor(route.key, digest.value).find((e) => e.platform !== null);
      platform = parsePlatform(listed?.platform ?? stored.platform ?? '');
      if (platform && !this.policy.allowList.allows(platform)) {
        throw notMirroredError({
          platform: formatPlatform(platform),
          digest: digest.value,
          image: `${route.asked}@${digest.value}`,
          allowList: this.policy.allowList,
          response: this.policy.notMirrored,
        });
      }
    }
    return this.keep(route, digest, stored.bytes, stored.mediaType, manifest, platform);
  }

  /** Upstream may be asked: not offline, and not a repository of the local namespace. */
  private canFetch(route: Route): boolean {
    return !this.policy.offline && route.upstream.client !== undefined;
  }

  private offlineNote(route: Route): string {
    return route.local ? '' : ', and the mirror is offline';
  }

  private async serveStored(row: ManifestRow, wantBody: boolean): Promise<ManifestResult | undefined> {
    this.catalogue.touchManifest(row.repo, row.digest);
    const base = { digest: row.digest, mediaType: row.media_type, size: row.size, source: 'store' as const };
    if (!wantBody) return base;
    let bytes = this.cache.get(row.digest);
    if (!bytes) {
      const parsed = parseDigest(row.digest);
      bytes = parsed.ok ? await this.store.read(parsed.digest) : undefined;
      if (!bytes) {
        this.log.error('catalogue lists a manifest whose file is missing; fetching it again', { repo: row.repo, digest: row.digest });
        return undefined;
      }
      this.cache.set(row.digest, bytes);
    }
    return { ...base, bytes };
  }

  /**
   * Refuses what belongs to a platform this mirror does not carry: a manifest stored indexes list
   * only under such platforms, and (through their subject) its signatures and attestations.
   */
  assertMirrored(route: Route, digest: string): void {
    this.assertNotExcluded(route, digest);
  }

  /** Refuses a digest that stored indexes list only under platforms this mirror does not carry. */
  private assertNotExcluded(route: Route, digest: string, referrer?: string): void {
    const entries = this.catalogue.indexEntriesFor(route.key, digest);
    if (entries.length === 0) return;
    const excluded = entries.filter((e) => e.platform !== null && !this.allows(e.platform));
    if (excluded.length < entries.length) return;
    const entry = excluded[0]!;
    throw this.refused(route, notMirroredError({
      platform: entry.platform!,
      digest,
      index: this.describeIndex(route, entry.index_digest),
      referrer,
      allowList: this.policy.allowList,
      response: this.policy.notMirrored,
    }));
  }

  /** Tells the events of a not-mirrored refusal, and returns the error to throw. */
  private refused(route: Route, error: OciError): OciError {
    const platform = (error.detail as { platform?: unknown } | undefined)?.platform;
    if (typeof platform === 'string') this.events.refused?.({ repository: route.key, platform, at: Date.now() });
    return error;
  }

  private allows(platform: string): boolean {
    const p = parsePlatform(platform);
    return p !== undefined && this.policy.allowList.allows(p);
  }

  /**
   * The index in the client's words: the repository as it named it, and the index by digest
   * (the request is for a child by digest; whether the client reached the index by a tag or by
   * its digest, the digest names it exactly).
   */
  private describeIndex(route: Route, indexDigest: string): string {
    return `${route.asked}@${indexDigest}`;
  }

  private fetch(route: Route, reference: string): Promise<Fetched> {
    return this.flights.run(`${route.key}@${reference}`, async () => {
      try {
        return await this.fetchAndStore(route, reference);
      } catch (e) {
        throw toClientError(e, 'MANIFEST_UNKNOWN');
      }
    });
  }

  private async fetchAndStore(route: Route, reference: string): Promise<Fetched> {
    const client = route.upstream.client;
    if (!client) throw ociErrors.manifestUnknown(`${route.key}:${reference} is not in this mirror`);
    const res = await client.manifest(route.repo, reference, 'GET');
    const bytes = res.bytes!;
    const requested = isDigestLike(reference) ? parseDigest(reference) : undefined;
    const algorithm = requested?.ok ? requested.digest.algorithm : 'sha256';
    const digest = digestOf(bytes, algorithm);
    const what = `manifest ${route.key}${requested ? '@' : ':'}${reference}`;
    if (requested?.ok && digest !== requested.digest.value) {
      throw new UpstreamError('bad_response', `${what}: upstream sent bytes whose digest is ${digest}; refused`);
    }
    if (res.digest && res.digest.startsWith(`${algorithm}:`) && res.digest !== digest) {
      throw new UpstreamError('bad_response', `${what}: upstream's Docker-Content-Digest ${res.digest} does not match the bytes (${digest}); refused`);
    }
    const parsed = parseManifest(bytes, res.mediaType);
    if (!parsed.ok) throw new UpstreamError('bad_response', `${what}: upstream sent an invalid manifest (${parsed.reason})`);
    const manifest = parsed.manifest;
    if (manifest.subject) this.assertNotExcluded(route, manifest.subject.digest, `${route.key}@${digest}`);
    const platform = manifest.kind === 'image' ? await this.imagePlatform(route, digest, manifest, reference) : undefined;
    const d = parseDigest(digest);
    if (!d.ok) throw new Error(d.reason);
    const kept = await this.keep(route, d.digest, bytes, res.mediaType, manifest, platform);
    this.shared?.uploads.enqueue({ kind: 'manifest', repo: route.key, digest });
    if (!isDigestLike(reference)) {
      this.catalogue.setTag(route.key, reference, digest);
      this.shared?.uploads.enqueue({ kind: 'tag', repo: route.key, tag: reference });
    }
    this.events.fetched?.(route, bytes.length);
    return kept;
  }

  /** Stores verified manifest bytes and records them (with the platform that decided them). */
  private async keep(route: Route, d: Digest, bytes: Buffer, mediaType: string, manifest: ParsedManifest, platform: Platform | undefined): Promise<Fetched> {
    const row: ManifestRow = {
      repo: route.key,
      digest: d.value,
      media_type: mediaType,
      size: bytes.length,
      kind: manifest.kind,
      platform: platform ? formatPlatform(platform) : null,
    };
    await this.store.putUnlessStored(d, bytes);
    this.catalogue.addManifest(manifestRecord({ repo: route.key, digest: d.value, mediaType, size: bytes.length, manifest, platform: row.platform ?? undefined }));
    this.cache.set(d.value, bytes);
    return { row, bytes };
  }

  /**
   * The platform of an image manifest: from the index entry that lists it, else from its config.
   * Throws the not-mirrored error for a platform outside the allow-list, before anything is stored.
   */
  private async imagePlatform(route: Route, digest: string, manifest: ImageManifest, reference: string): Promise<Platform | undefined> {
    this.assertNotExcluded(route, digest);
    const listed = this.catalogue.indexEntriesFor(route.key, digest).find((e) => e.platform !== null);
    if (listed) return parsePlatform(listed.platform!);
    if (!isImageConfigType(manifest.config.mediaType)) return undefined; // an artifact, not platform-specific
    const platform = await this.configPlatform(route, manifest);
    if (platform && !this.policy.allowList.allows(platform)) {
      const name = formatPlatform(platform);
      throw this.refused(route, notMirroredError({
        platform: name,
        digest,
        image: isDigestLike(reference) ? `${route.asked}@${digest}` : `${route.asked}:${reference}`,
        allowList: this.policy.allowList,
        response: this.policy.notMirrored,
      }));
    }
    return platform;
  }

  /** Reads os/architecture/variant from an image config (fetched, verified, and kept if allowed). */
  private async configPlatform(route: Route, manifest: ImageManifest): Promise<Platform | undefined> {
    const d = parseDigest(manifest.config.digest);
    if (!d.ok) return undefined;
    let bytes = await this.store.read(d.digest);
    if (!bytes) {
      const res = await route.upstream.client!.blob(route.repo, d.digest.value);
      const chunks: Buffer[] = [];
      let total = 0;
      for await (const c of res.body) {
        total += (c as Buffer).length;
        if (total > 4 * 1024 * 1024) {
          discard(res.body);
          throw new UpstreamError('bad_response', `image config ${d.digest.value} is implausibly large`);
        }
        chunks.push(c as Buffer);
      }
      bytes = Buffer.concat(chunks);
      if (digestOf(bytes, d.digest.algorithm) !== d.digest.value) {
        throw new UpstreamError('bad_response', `image config ${d.digest.value}: upstream sent bytes that do not match; refused`);
      }
      const platform = platformOfImageConfig(bytes);
      if (!platform || this.policy.allowList.allows(platform)) {
        await this.store.put(d.digest, bytes);
        this.catalogue.addBlob(d.digest.value, bytes.length);
        this.shared?.uploads.enqueue({ kind: 'blob', digest: d.digest.value });
        this.events.fetched?.(route, bytes.length);
      }
      return platform;
    }
    return platformOfImageConfig(bytes);
  }
}

function result(f: Fetched, wantBody: boolean, source: ManifestResult['source'] = 'upstream'): ManifestResult {
  return {
    digest: f.row.digest,
    mediaType: f.row.media_type,
    size: f.row.size,
    source,
    ...(wantBody ? { bytes: f.bytes } : {}),
  };
}

function clip(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
