import { createHash, type Hash } from 'node:crypto';

/** Digest algorithms this mirror verifies. sha256 is the registry default; sha512 is optional in the spec. */
const ALGORITHMS = { sha256: 64, sha512: 128 } as const;
export type DigestAlgorithm = keyof typeof ALGORITHMS;

export interface Digest {
  algorithm: DigestAlgorithm;
  hex: string;
  /** `algorithm:hex`, the canonical string form. */
  value: string;
}

export type DigestParse = { ok: true; digest: Digest } | { ok: false; reason: string };

/**
 * Parse a digest string strictly. Only lower-case hex of the exact length is accepted, so the
 * result is safe to use as a file name and in SQL and URLs.
 */
export function parseDigest(input: string): DigestParse {
  const colon = input.indexOf(':');
  if (colon <= 0) return { ok: false, reason: `"${clip(input)}" is not a digest (expected algorithm:hex)` };
  const algorithm = input.slice(0, colon);
  const hex = input.slice(colon + 1);
  if (!Object.hasOwn(ALGORITHMS, algorithm)) {
    if (/^[a-z0-9]+([+._-][a-z0-9]+)*$/.test(algorithm)) {
      return { ok: false, reason: `digest algorithm "${clip(algorithm)}" is not supported (use sha256 or sha512)` };
    }
    return { ok: false, reason: `"${clip(input)}" is not a digest (bad algorithm)` };
  }
  const expected = ALGORITHMS[algorithm as DigestAlgorithm];
  if (hex.length !== expected || !/^[a-f0-9]+$/.test(hex)) {
    return { ok: false, reason: `"${clip(input)}" is not a valid ${algorithm} digest (expected ${expected} lower-case hex characters)` };
  }
  return { ok: true, digest: { algorithm: algorithm as DigestAlgorithm, hex, value: input } };
}

export function isDigestLike(ref: string): boolean {
  return ref.includes(':');
}

export function newHasher(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm);
}

export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

function clip(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
