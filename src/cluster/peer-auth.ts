import { createHmac, timingSafeEqual } from 'node:crypto';

/** The header a replica signs its requests to another replica with. */
export const PEER_HEADER = 'x-sparse-mirror-peer';
/** How far a signature's clock may be from ours: replicas' clocks drift, replays must not last. */
const MAX_SKEW_MS = 60_000;

/**
 * Peer requests carry `<unix ms>.<hex HMAC-SHA256(secret, "<unix ms> <METHOD> <path>")>`, never
 * the secret itself: a captured header opens one path for a minute, not the cluster.
 */
export function signPeerRequest(secret: string, method: string, path: string, now = Date.now()): string {
  return `${now}.${mac(secret, now, method, path)}`;
}

export type PeerCheck = { ok: true } | { ok: false; reason: string };

export function verifyPeerRequest(secret: string, method: string, path: string, header: string | undefined, now = Date.now()): PeerCheck {
  if (!header) return { ok: false, reason: 'the request carries no peer signature' };
  const m = /^(\d{1,16})\.([0-9a-f]{64})$/.exec(header);
  if (!m) return { ok: false, reason: 'the peer signature is malformed' };
  const at = Number(m[1]);
  if (Math.abs(now - at) > MAX_SKEW_MS) return { ok: false, reason: 'the peer signature has expired (are the replicas\u2019 clocks in step?)' };
  const expected = Buffer.from(mac(secret, at, method, path), 'hex');
  if (!timingSafeEqual(expected, Buffer.from(m[2]!, 'hex'))) return { ok: false, reason: 'the peer signature does not match (is cluster.secret the same on every replica?)' };
  return { ok: true };
}

function mac(secret: string, at: number, method: string, path: string): string {
  return createHmac('sha256', secret).update(`${at} ${method.toUpperCase()} ${path}`).digest('hex');
}
