import { Agent, request, type Dispatcher } from 'undici';
import { PEER_HEADER, signPeerRequest } from '../cluster/peer-auth.js';
import type { Membership } from '../cluster/members.js';
import { UpstreamError } from '../upstream/errors.js';
import { discard, type BlobResponse } from '../upstream/client.js';
import type { Route } from './routing.js';

/** Where a replica answers its peers: the registry API under this prefix, signed requests only. */
export const PEER_PREFIX = '/_peer';

const CONNECT_TIMEOUT_MS = 2_000;

/** The request a replica would send for a blob of `route`, relative to a peer's origin. */
export function peerBlobPath(route: Route, digest: string): string {
  return `${PEER_PREFIX}/v2/${route.repo}/blobs/${digest}?ns=${encodeURIComponent(route.upstream.name)}`;
}

/** A failure to reach a peer at all (refused, reset, timed out): rank it down, ask the next. */
export class PeerUnreachableError extends Error {
  override name = 'PeerUnreachableError';
}

/** Signed requests from this replica to the others. */
export class PeerClient {
  private readonly agent: Dispatcher;

  constructor(
    private readonly secret: string,
    readonly membership: Membership,
    /** Silence (no headers, or a stalled body) for this long means the peer is cut off. */
    timeoutMs: number,
  ) {
    this.agent = new Agent({
      connect: { timeout: Math.min(CONNECT_TIMEOUT_MS, timeoutMs) },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      connections: 64,
    });
  }

  /** A live peer answers its health route with 200 to a signed request. */
  async probe(member: string): Promise<boolean> {
    const path = `${PEER_PREFIX}/health`;
    try {
      const res = await request(new URL(path, member), { dispatcher: this.agent, method: 'GET', headers: this.headers('GET', path) });
      res.body.resume();
      return res.statusCode === 200;
    } catch {
      return false;
    }
  }

  /**
   * The blob from `member`, which fetches it (from its disk, the bucket or upstream) and streams it
   * from the first byte. A peer that answers with an error passes its error on as upstream's; one
   * that cannot be reached throws PeerUnreachableError.
   */
  async blob(member: string, route: Route, digest: string, offset: number): Promise<BlobResponse> {
    const path = peerBlobPath(route, digest);
    let res: Dispatcher.ResponseData;
    try {
      res = await request(new URL(path, member), {
        dispatcher: this.agent,
        method: 'GET',
        headers: { ...this.headers('GET', path), ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) },
      });
    } catch (e) {
      throw new PeerUnreachableError(`replica ${member} is unreachable: ${(e as Error).message}`);
    }
    const length = Number(res.headers['content-length'] ?? NaN);
    if (res.statusCode === 206) {
      const m = /^bytes (\d+)-\d+\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''));
      if (m) return { body: res.body, offset: Number(m[1]), size: Number(m[2]) };
    }
    if (res.statusCode === 200) return { body: res.body, offset: 0, size: Number.isFinite(length) ? length : undefined };
    const message = await errorMessage(res);
    const text = `replica ${member} could not serve blob ${digest}: ${message}`;
    if (res.statusCode === 404) throw new UpstreamError('not_found', text, 404);
    if (res.statusCode === 401 || res.statusCode === 403) throw new UpstreamError('denied', text, res.statusCode);
    if (res.statusCode === 429) throw new UpstreamError('rate_limited', text, 429);
    throw new UpstreamError('unavailable', text, res.statusCode);
  }

  close(): Promise<void> {
    return this.agent.close();
  }

  private headers(method: string, path: string): Record<string, string> {
    return { [PEER_HEADER]: signPeerRequest(this.secret, method, path) };
  }
}

/** The first error's message of an OCI error body (never headers), or the status. */
async function errorMessage(res: Dispatcher.ResponseData): Promise<string> {
  try {
    const text = (await res.body.text()).slice(0, 4096);
    const parsed = JSON.parse(text) as { errors?: Array<{ message?: unknown }> };
    const m = parsed.errors?.[0]?.message;
    return typeof m === 'string' ? m : `HTTP ${res.statusCode}`;
  } catch {
    discard(res.body);
    return `HTTP ${res.statusCode}`;
  }
}
