import { createHash } from 'node:crypto';

/**
 * Rendezvous (highest-random-weight) hashing: every member scores every key, and the key's owner
 * is the member with the highest score. A member that joins takes over only the keys it now
 * scores highest on, and one that leaves hands over only its own keys, each to the member
 * ranked next for it: about 1/n of the keys move, where `hash % n` moves almost all of them.
 */
export function rankMembers(key: string, members: readonly string[]): string[] {
  return [...new Set(members)]
    .map((member) => ({ member, score: score(member, key) }))
    .sort((a, b) => (a.score === b.score ? (a.member < b.member ? -1 : 1) : a.score < b.score ? 1 : -1))
    .map((s) => s.member);
}

/** The owner of `key` among `members` (undefined for none). */
export function ownerOf(key: string, members: readonly string[]): string | undefined {
  return rankMembers(key, members)[0];
}

/** 64 bits of sha256(member, key): uniform, and the same on every replica and Node version. */
function score(member: string, key: string): bigint {
  const h = createHash('sha256').update(member).update('\0').update(key).digest();
  return h.readBigUInt64BE(0);
}
