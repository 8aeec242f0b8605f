import type { Digest } from '../oci/digest.js';
import { ociErrors } from '../oci/errors.js';
import { BucketUnavailableError, type Bucket } from '../store/bucket.js';
import type { DownloadResponse, UpstreamClient } from '../upstream/client.js';
import type { Logger } from '../log.js';
import type { DownloadSource } from './blob-download.js';
import type { BucketUploads } from './bucket-uploads.js';
import { PeerUnreachableError, type PeerClient } from './peers.js';
import type { Route } from './routing.js';

/**
 * What replicas share: the bucket (the truth every replica reads), the queue that writes to it,
 * and, when there are several replicas, the signed client that asks the others.
 */
export interface SharedTier {
  bucket: Bucket;
  uploads: BucketUploads;
  peers?: PeerClient;
}

/** Where a download's bytes came from, last time it asked. */
export type Origin = 'bucket' | 'peer' | 'upstream';

/**
 * The tiers below the local store, asked in order on every fetch (a resume asks again, so a
 * download whose owner dies mid-body goes on from the next replica or upstream at its offset):
 *   1. the bucket, if it holds the blob;
 *   2. the replica that owns the digest, unless that is this one or the request came from a peer
 *      (a peer's request is never forwarded again, so two replicas that rank differently for a
 *      moment cannot bounce a request between them);
 *   3. upstream.
 */
export class TieredSource implements DownloadSource {
  origin: Origin | undefined;
  /** The replica the last fetch streamed from. */
  private peer: string | undefined;

  constructor(
    private readonly shared: SharedTier,
    private readonly route: Route,
    private readonly digest: Digest,
    private readonly upstream: UpstreamClient | undefined,
    private readonly fromPeer: boolean,
    private readonly log: Logger,
  ) {}

  async fetch(offset: number): Promise<DownloadResponse> {
    let bucketDown: string | undefined;
    try {
      const stored = await this.shared.bucket.blob(this.digest, offset);
      if (stored) {
        this.origin = 'bucket';
        return stored;
      }
    } catch (e) {
      if (!(e instanceof BucketUnavailableError)) throw e;
      bucketDown = e.message;
      this.log.warn('shared bucket unavailable; asking past it', { digest: this.digest.value, error: e.message });
    }
    const peers = this.shared.peers;
    // A resume after streaming from a replica: it died or was cut off mid-body. Rank without it
    // until a probe finds it back, rather than wait for it to time out again.
    if (peers && this.peer && offset > 0) {
      peers.membership.markDown(this.peer);
      this.log.warn('owner replica stopped mid-body; the next in rank takes over', { digest: this.digest.value, replica: this.peer, offset });
    }
    this.peer = undefined;
    if (peers && !this.fromPeer) {
      for (const member of peers.membership.ranking(this.digest.value)) {
        if (peers.membership.isSelf(member)) break;
        try {
          const res = await peers.blob(member, this.route, this.digest.value, offset);
          this.origin = 'peer';
          this.peer = member;
          return res;
        } catch (e) {
          if (!(e instanceof PeerUnreachableError)) throw e;
          peers.membership.markDown(member);
          this.log.warn('owner replica unreachable; the next in rank takes over', { digest: this.digest.value, replica: member, error: e.message });
        }
      }
    }
    if (!this.upstream) {
      const why = bucketDown ? `, the shared bucket is unreachable (${bucketDown})` : '';
      throw ociErrors.blobUnknown(`blob ${this.digest.value} is not in this mirror${why}, and the mirror is offline`, { digest: this.digest.value });
    }
    this.origin = 'upstream';
    return this.upstream.download(this.route.repo, this.digest.value, offset);
  }
}

/** A blob's size from the bucket, or undefined when it lacks it or is down (upstream is asked next). */
export async function sharedBlobSize(shared: SharedTier, digest: Digest, log: Logger): Promise<number | undefined> {
  try {
    return await shared.bucket.blobSize(digest);
  } catch (e) {
    if (!(e instanceof BucketUnavailableError)) throw e;
    log.warn('shared bucket unavailable', { digest: digest.value, error: e.message });
    return undefined;
  }
}
