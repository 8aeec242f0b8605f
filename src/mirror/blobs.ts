import { ReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { parseDigest, type Digest } from '../oci/digest.js';
import { ociErrors } from '../oci/errors.js';
import { parseRange, type ByteRange } from '../oci/range.js';
import { openedFd, type BlobStore, type FileRegion } from '../store/blob-store.js';
import type { Catalogue } from '../store/catalogue.js';
import type { Logger } from '../log.js';
import type { UpstreamClient } from '../upstream/client.js';
import { BlobDownload, upstreamSource, type DownloadSource, type FollowStream } from './blob-download.js';
import type { Route } from './routing.js';
import { sharedBlobSize, TieredSource, type SharedTier } from './shared-tier.js';
import { toClientError } from './upstream-errors.js';

export interface BlobPolicy {
  offline: boolean;
  /** Fetch only blobs that a stored manifest of the same repository references. */
  requireReference: boolean;
  /** Once a client's blob has arrived, fetch the next one its image lacks (see readAhead()). */
  readAhead: boolean;
}

/** Read-ahead downloads running at once, across all clients. */
const MAX_READ_AHEADS = 2;
/**
 * A blob up to this size (an image's config, a tiny layer) is in before a second download would
 * slow it: what follows it is read ahead at once, beside it, not after it has arrived.
 */
const READ_AHEAD_BESIDE = 64 * 1024;

export interface BlobRequest {
  wantBody: boolean;
  range?: string;
  /** A client's pull (not prefetch, which fetches every blob itself): may trigger a read-ahead. */
  readAhead?: boolean;
  /**
   * Another replica asks, having checked the client's rights and the reference rule itself: this
   * one fetches (it owns the digest) and never forwards the request again.
   */
  fromPeer?: boolean;
}

export interface BlobEvents {
  /** A blob was fetched from upstream and stored. */
  fetched?(route: Route, bytes: number): void;
  /** A download from upstream started, and one ended (stored or not): bytes stream through JS meanwhile. */
  downloadStarted?(): void;
  downloadEnded?(): void;
}

export interface BlobResult {
  digest: string;
  /** Total size, when known (upstream may omit it for an unreferenced blob). */
  size?: number;
  range?: ByteRange;
  /** The body (the whole blob or `range`); absent for HEAD. */
  body?: Readable;
  /**
   * The same bytes as parts of an open file, as they become safe to send (for sendfile). A caller
   * that takes them does not read `body`, and destroys it when done, which closes the file.
   */
  regions?: () => AsyncIterable<FileRegion>;
  /** The local store, upstream, or (with replicas) the shared bucket or the replica that owns the blob. */
  source: 'store' | 'upstream' | 'bucket' | 'peer';
  /**
   * Settles once a blob fetched for this request is stored and recorded, or rejects if it could
   * not be. A body can end before that: its bytes verify first, the flush and rename follow.
   */
  stored?: Promise<void>;
}

/**
 * Blobs: served from the store, or fetched through from upstream while streaming to every client
 * that asks for them meanwhile (one upstream fetch per blob however many clients wait).
 */
export class BlobService {
  private readonly downloads = new Map<string, BlobDownload>();
  private readAheads = 0;
  private closing = false;

  constructor(
    private readonly store: BlobStore,
    private readonly catalogue: Catalogue,
    private readonly policy: BlobPolicy,
    private readonly log: Logger,
    private readonly events: BlobEvents = {},
    private readonly shared?: SharedTier,
  ) {}

  /**
   * Shutdown has begun: read no more ahead. A read-ahead starts when a download commits, which
   * can be after shutdown took its list of downloads to wait for; nothing would wait for it, and
   * it would fetch into a store being closed.
   */
  stopReadingAhead(): void {
    this.closing = true;
  }

  /** Downloads in progress (graceful shutdown waits for or aborts these). */
  inFlight(): BlobDownload[] {
    return [...this.downloads.values()];
  }

  async get(route: Route, digestText: string, opts: BlobRequest): Promise<BlobResult> {
    const parsed = parseDigest(digestText);
    if (!parsed.ok) throw ociErrors.digestInvalid(parsed.reason, { digest: digestText.slice(0, 80) });
    const digest = parsed.digest;
    const reference = this.catalogue.blobReference(route.key, digest.value);
    // Pushed repositories hold whatever their pushers uploaded; the rule guards upstream fetches.
    if (this.policy.requireReference && !reference && !route.local && !opts.fromPeer) {
      throw ociErrors.blobUnknown(
        `blob ${digest.value} is not referenced by any manifest this mirror holds for ${route.key}; ` +
          `pull the image's manifest through the mirror first (it only fetches blobs of the platforms it carries)`,
        { digest: digest.value },
      );
    }

    const stored = this.catalogue.getBlob(digest.value);
    if (stored) {
      const size = await this.store.size(digest);
      if (size === stored.size) {
        this.catalogue.touchBlob(digest.value);
        this.readAhead(route, digest.value, opts, Promise.resolve());
        return this.respond(digest, size, opts, 'store', (range) => this.store.createReadStream(digest, range));
      }
      this.log.error('catalogue lists a blob whose file is missing or damaged; fetching it again', { digest: digest.value });
      this.catalogue.removeBlob(digest.value);
    }

    const running = this.downloads.get(digest.value);
    // A download that just failed is on its way out of the map: start afresh instead.
    if (running && running.state !== 'failed') {
      this.readAhead(route, digest.value, opts, readAheadAfter(running, reference?.size));
      return this.followDownload(running, opts);
    }

    const client = this.policy.offline ? undefined : route.upstream.client;
    const shared = route.local ? undefined : this.shared;
    if (!client && !shared) {
      const why = route.local ? '' : ', and the mirror is offline';
      throw ociErrors.blobUnknown(`blob ${digest.value} is not in this mirror${why}`, { digest: digest.value });
    }
    if (!opts.wantBody) {
      // HEAD of a blob we lack: its size from the bucket or upstream, download nothing.
      const inBucket = shared && (await sharedBlobSize(shared, digest, this.log));
      if (inBucket !== undefined) return { digest: digest.value, size: inBucket, source: 'bucket' };
      if (!client) throw ociErrors.blobUnknown(`blob ${digest.value} is not in this mirror, and the mirror is offline`, { digest: digest.value });
      try {
        const head = await client.blobHead(route.repo, digest.value);
        return { digest: digest.value, size: head.size ?? reference?.size, source: 'upstream' };
      } catch (e) {
        throw toClientError(e, 'BLOB_UNKNOWN');
      }
    }
    const download = this.startDownload(route, client, digest, reference?.size, opts.fromPeer);
    this.readAhead(route, digest.value, opts, readAheadAfter(download, reference?.size));
    return this.followDownload(download, opts);
  }

  /**
   * Once `after` settles (see readAheadAfter()), starts fetching the next blob the client's image
   * lacks: the one after it in the manifest, else the first before it. A client that pulls blobs
   * one at a time (skopeo, podman, Docker with one download at a time) then finds the next under
   * way or stored when it asks, instead of waiting for a cold fetch that also competes with it for
   * the CPU. Only a blob request triggers it (fetching a manifest may be an inspection, not a
   * pull), one blob ahead at most, so a client that stops pulling costs at most one blob.
   */
  private readAhead(route: Route, digest: string, opts: BlobRequest, after: Promise<unknown>): void {
    if (!opts.readAhead || !opts.wantBody || !this.policy.readAhead || route.local) return;
    after.then(
      () => {
        const client = this.policy.offline ? undefined : route.upstream.client;
        if (!client || this.closing || this.readAheads >= MAX_READ_AHEADS) return;
        // Blobs being fetched are absent too (recorded once flushed): look past as many as there are.
        const next = this.catalogue.absentBlobsAfter(route.key, digest, MAX_READ_AHEADS + 1 + this.downloads.size).find((b) => !this.downloads.has(b.digest));
        const parsed = next && parseDigest(next.digest);
        if (!next || !parsed?.ok) return;
        this.log.debug('reading ahead', { repo: route.key, after: digest, digest: next.digest, size: next.size });
        this.readAheads++;
        const download = this.startDownload(route, client, parsed.digest, next.size);
        // The slot is for upstream fetches: it frees once the bytes are in, not after the (deferred) flush.
        void download.arrived.catch(() => {}).finally(() => this.readAheads--);
      },
      () => {}, // the blob was not stored: its own request reports why
    );
  }

  private startDownload(route: Route, client: UpstreamClient | undefined, digest: Digest, expectedSize: number | undefined, fromPeer = false): BlobDownload {
    const shared = route.local ? undefined : this.shared;
    const tiered = shared ? new TieredSource(shared, route, digest, client, fromPeer, this.log) : undefined;
    const source: DownloadSource = tiered ?? upstreamSource(client!, route.repo, digest.value);
    const download = new BlobDownload(digest, this.store, source, expectedSize, (size) => {
      this.catalogue.addBlob(digest.value, size);
      // What came from upstream goes to the bucket; what came from the bucket or the owner is there or on its way.
      if (!tiered || tiered.origin === 'upstream') {
        this.events.fetched?.(route, size);
        shared?.uploads.enqueue({ kind: 'blob', digest: digest.value });
      }
    });
    this.downloads.set(digest.value, download);
    this.events.downloadStarted?.();
    download.finished
      .catch((e: Error) => this.log.warn('blob download failed; nothing stored', { digest: digest.value, repo: route.key, error: e.message }))
      .finally(() => {
        if (this.downloads.get(digest.value) === download) this.downloads.delete(digest.value);
        this.events.downloadEnded?.();
      });
    return download;
  }

  private async followDownload(download: BlobDownload, opts: BlobRequest): Promise<BlobResult> {
    await download.ready;
    if (download.state === 'failed') throw toClientError(download.error, 'BLOB_UNKNOWN');
    // Verified already (being flushed and renamed): served from the mirror's copy, not from upstream.
    const source = download.verified ? 'store' : (download.source.origin ?? 'upstream');
    return { ...this.respond(download.digest, download.size, opts, source, (range) => download.follow(range)), stored: download.finished };
  }

  private respond(
    digest: Digest,
    size: number | undefined,
    opts: BlobRequest,
    source: BlobResult['source'],
    open: (range?: ByteRange) => Readable,
  ): BlobResult {
    if (size === undefined) return { digest: digest.value, body: opts.wantBody ? open() : undefined, source };
    const r = parseRange(opts.range, size);
    if (r.kind === 'unsatisfiable') {
      throw ociErrors.rangeInvalid(`range ${opts.range} is outside blob ${digest.value} (${size} bytes)`, size);
    }
    const range = r.kind === 'range' ? r.range : undefined;
    if (!opts.wantBody) return { digest: digest.value, size, range, source };
    const body = open(range);
    return { digest: digest.value, size, range, body, regions: regionsOf(body, range?.start ?? 0, range ? range.end - range.start + 1 : size), source };
  }
}

/** A body's bytes as file regions: a stored file in one piece, a download as it grows. */
function regionsOf(body: Readable, start: number, length: number): BlobResult['regions'] {
  if (body instanceof ReadStream) {
    return async function* () {
      yield { fd: await openedFd(body), start, length };
    };
  }
  return (body as FollowStream).regions;
}

/**
 * When a blob's request may read the next one ahead: once its bytes are in and verified (its
 * flush and rename need no upstream, and a busy disk can make them slow), so that the two do not
 * share the link; at once for a small blob, which a second download barely slows, so that the
 * next one (the first layer, after the config) starts a round trip earlier.
 */
function readAheadAfter(download: BlobDownload, size: number | undefined): Promise<unknown> {
  return size !== undefined && size <= READ_AHEAD_BESIDE ? Promise.resolve() : download.arrived;
}
