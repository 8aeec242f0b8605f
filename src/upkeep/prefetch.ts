import { parseDigest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import { parseManifest } from '../oci/manifest.js';
import { parsePlatform } from '../oci/platform.js';
import { formatReference, parseImageReference } from '../oci/reference.js';
import { classifyArtifact, subjectOfTag, type ArtifactKind } from '../oci/referrers.js';
import type { Mirror } from '../mirror/mirror.js';
import type { Route } from '../mirror/routing.js';
import { refusalMessage, signatureGate, type SignatureGate } from '../signatures/gate.js';
import type { VerdictStatus } from '../store/signature-verdicts.js';
import { silentLogger } from '../log.js';

export interface PrefetchProgress {
  ref: string;
  /** Bytes fetched from upstream so far for this image. */
  fetched: number;
  present: number;
  blobsDone: number;
  blobsTotal: number;
}

export interface PrefetchResult {
  ref: string;
  digest: string;
  platformsFetched: string[];
  /** Platforms the index lists that this mirror does not carry (not fetched). */
  platformsSkipped: string[];
  manifests: number;
  blobs: number;
  bytesFetched: number;
  bytesPresent: number;
  /** Signatures, SBOMs, attestations (and other referrers) of the image and its carried children. */
  attached: Record<ArtifactKind, number>;
  /** Those upstream lists for children of platforms this mirror does not carry: not fetched. */
  attachedSkipped: number;
  /** Referrers that could not be had (refused content, upstream errors): the image itself is fine. */
  attachmentProblems: string[];
  /** The signature policy's verdict, when a policy covers the repository. */
  signature?: { status: VerdictStatus; reason: string; mode: 'enforce' | 'warn' };
  /** Set when an `enforce` policy refused the image: why. Nothing but its index was fetched. */
  refused?: string;
}

export interface PrefetchOptions {
  onProgress?: (p: PrefetchProgress) => void;
  /** Also fetch signatures, SBOMs and attestations (default: the config's `referrers`). */
  referrers?: boolean;
  /** The signature policy (default: the mirror's, from its config). */
  signatures?: SignatureGate;
}

const BLOB_CONCURRENCY = 4;
/** Signatures of signatures (a signed SBOM) are followed this deep. */
const MAX_ATTACHMENT_DEPTH = 3;

/** Resolves `docker.io/library/alpine:3.20`-style references to a route of this mirror. */
export function routeForReference(mirror: Mirror, text: string): { route: Route; reference: string; display: string } {
  const ref = parseImageReference(text);
  const route = mirror.router.route(ref.repository, ref.registry);
  const display = formatReference({ registry: route.local ? undefined : route.upstream.name, repository: route.repo, tag: ref.tag, digest: ref.digest });
  return { route, reference: ref.digest ?? ref.tag!, display };
}

/**
 * Fills the store with one image as a pull would: the index byte-exact, the child manifests of
 * the allowed platforms (with their attestations) and all their blobs. What is already stored
 * is not fetched again.
 */
export async function prefetchImage(mirror: Mirror, text: string, opts: PrefetchOptions = {}): Promise<PrefetchResult> {
  const onProgress = opts.onProgress;
  const withReferrers = opts.referrers ?? mirror.config.referrers;
  const { route, reference, display } = routeForReference(mirror, text);
  const progress: PrefetchProgress = { ref: display, fetched: 0, present: 0, blobsDone: 0, blobsTotal: 0 };
  const result: PrefetchResult = {
    ref: display,
    digest: '',
    platformsFetched: [],
    platformsSkipped: [],
    manifests: 0,
    blobs: 0,
    bytesFetched: 0,
    bytesPresent: 0,
    attached: { signature: 0, sbom: 0, attestation: 0, other: 0 },
    attachedSkipped: 0,
    attachmentProblems: [],
  };
  const blobs = new Map<string, number>();
  /** Manifests of the image carried here: the subjects whose signatures go with it. */
  const subjects: string[] = [];
  /** Children of platforms not carried: their signatures are counted, not fetched. */
  const refused: string[] = [];
  // Blobs stored from now on were fetched by this prefetch (an image config is fetched while
  // its manifest is checked), not found present. Timestamps are in milliseconds: starting on a
  // fresh one keeps a blob the previous image stored a moment ago from counting as fetched.
  const started = await nextMillisecond();

  // Under a signature policy the image is judged first: an unsigned one is skipped before its
  // platform manifests and blobs are fetched (its index is, as a pull fetches it).
  const gate = opts.signatures ?? signatureGate(mirror, silentLogger);
  let first: Awaited<ReturnType<typeof mirror.manifests.get>> | undefined;
  if (gate.policyFor(route)) {
    try {
      first = await mirror.manifests.get(route, reference, true);
    } catch (e) {
      if (notCarried(e)) return skippedPlatform(result, notCarried(e)!);
      throw e;
    }
    const judgement = (await gate.check(route, first.digest))!;
    const { verdict, policy } = judgement;
    result.signature = { status: verdict.status, reason: verdict.reason, mode: policy.mode };
    if (verdict.status !== 'verified' && policy.mode === 'enforce') {
      result.digest = first.digest;
      result.refused = refusalMessage(route, reference, first.digest, judgement);
      return result;
    }
  }

  const walk = async (ref: string, top: boolean): Promise<void> => {
    const m = top && first ? first : await mirror.manifests.get(route, ref, true);
    if (top) result.digest = m.digest;
    result.manifests++;
    if (m.source === 'upstream') result.bytesFetched += m.size;
    else result.bytesPresent += m.size;
    const parsed = parseManifest(m.bytes!, m.mediaType);
    if (!parsed.ok) return;
    subjects.push(m.digest);
    if (parsed.manifest.kind === 'image') {
      for (const b of mirror.catalogue.blobsOf(route.key, m.digest)) blobs.set(b.blob_digest, b.size);
      const platform = top ? mirror.catalogue.getManifest(route.key, m.digest)?.platform : undefined;
      if (platform) result.platformsFetched.push(platform);
      return;
    }
    for (const child of mirror.catalogue.childrenOf(route.key, m.digest)) {
      const platform = child.platform ? parsePlatform(child.platform) : undefined;
      const allowed = !child.platform || (platform !== undefined && mirror.allowList.allows(platform));
      const isAttestation = child.attestation_for !== null;
      if (!allowed) {
        if (!isAttestation && child.platform && !result.platformsSkipped.includes(child.platform)) result.platformsSkipped.push(child.platform);
        if (isAttestation) result.attachedSkipped++;
        else refused.push(child.child_digest);
        continue;
      }
      if (!isAttestation && child.platform && !result.platformsFetched.includes(child.platform)) result.platformsFetched.push(child.platform);
      await walk(child.child_digest, false);
    }
  };

  try {
    await walk(reference, true);
  } catch (e) {
    // A single-platform image of a platform this mirror does not carry: skipped, not an error.
    const platform = notCarried(e);
    if (platform && result.manifests === 0) return skippedPlatform(result, platform);
    throw e;
  }

  if (withReferrers) {
    await fetchAttachments(mirror, route, subjects, result, blobs);
    for (const digest of refused) result.attachedSkipped += await mirror.referrers.countUpstream(route, digest);
  }

  progress.blobsTotal = blobs.size;
  const queue = [...blobs];
  // Each blob's flush and record come after its body (once fetching goes quiet, blobs.flushQuietMs):
  // awaited all together at the end, or every worker would stall on its own blob's flush.
  const storing: Array<Promise<void>> = [];
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [digest, size] = next;
      const parsed = parseDigest(digest);
      const stored = mirror.catalogue.getBlob(digest);
      if (parsed.ok && stored && (await mirror.store.size(parsed.digest)) === size) {
        if (stored.stored_at >= started) {
          result.bytesFetched += size;
        } else {
          result.bytesPresent += size;
          progress.present += size;
        }
      } else {
        const b = await mirror.blobs.get(route, digest, { wantBody: true });
        for await (const chunk of b.body!) {
          progress.fetched += (chunk as Buffer).length;
          onProgress?.(progress);
        }
        // The body ends once verified; the blob is recorded later (a failure rejects the Promise.all below).
        const recorded = Promise.resolve(b.stored).then(() => {
          result.bytesFetched += size;
        });
        recorded.catch(() => {}); // not an unhandled rejection meanwhile
        storing.push(recorded);
      }
      result.blobs++;
      progress.blobsDone++;
      onProgress?.(progress);
    }
  };
  await Promise.all(Array.from({ length: BLOB_CONCURRENCY }, worker));
  await Promise.all(storing);
  return result;
}

/**
 * Fetches what refers to `subjects` (referrers API or fallback tag, and cosign's .sig/.att/.sbom
 * tags) and, breadth first, what refers to those, as a client verifying them would: manifests
 * through the mirror (so they are checked and stored), their blobs queued with the image's.
 */
async function fetchAttachments(mirror: Mirror, route: Route, subjects: string[], result: PrefetchResult, blobs: Map<string, number>): Promise<void> {
  const seen = new Set(subjects);
  let level = subjects;
  for (let depth = 1; depth <= MAX_ATTACHMENT_DEPTH && level.length > 0; depth++) {
    const next: string[] = [];
    for (const subject of level) {
      const wanted: Array<{ ref: string; kind: ArtifactKind }> = [];
      try {
        const found = await mirror.referrers.attachments(route, subject);
        for (const d of found.descriptors) wanted.push({ ref: d.digest, kind: classifyArtifact(d.artifactType) });
        for (const { tag } of found.tags) {
          const suffix = subjectOfTag(tag)?.suffix;
          if (suffix) wanted.push({ ref: tag, kind: classifyArtifact(undefined, suffix) });
        }
      } catch (e) {
        result.attachmentProblems.push(`referrers of ${subject}: ${(e as Error).message}`);
      }
      for (const w of wanted) {
        let m;
        try {
          m = await mirror.manifests.get(route, w.ref, true);
        } catch (e) {
          result.attachmentProblems.push(`${w.ref}: ${(e as Error).message}`);
          continue;
        }
        if (seen.has(m.digest)) continue;
        seen.add(m.digest);
        result.attached[w.kind]++;
        result.manifests++;
        if (m.source === 'upstream') result.bytesFetched += m.size;
        else result.bytesPresent += m.size;
        for (const b of mirror.catalogue.blobsOf(route.key, m.digest)) blobs.set(b.blob_digest, b.size);
        next.push(m.digest);
      }
    }
    level = next;
  }
}

/** The platform a not-mirrored error names, if `e` is one. */
function notCarried(e: unknown): string | undefined {
  return e instanceof OciError ? (e.detail as { platform?: string } | undefined)?.platform : undefined;
}

function skippedPlatform(result: PrefetchResult, platform: string): PrefetchResult {
  result.platformsSkipped.push(platform);
  return result;
}

/** Date.now() once it has moved past the millisecond this was called in. */
async function nextMillisecond(): Promise<number> {
  const now = Date.now();
  while (Date.now() === now) await new Promise((resolve) => setTimeout(resolve, 1));
  return Date.now();
}
