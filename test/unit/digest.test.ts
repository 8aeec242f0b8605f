import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { digestOf, isDigestLike, newHasher, parseDigest } from '../../src/oci/digest.js';

const HEX = '0123456789abcdef';
/** A lower-case hex string of exactly n characters, using every hex digit. */
function hex(n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += HEX[i % 16];
  return s;
}

function reasonOf(input: string): string {
  const r = parseDigest(input);
  if (r.ok) throw new Error(`expected ${JSON.stringify(input)} to be refused, got ${r.digest.value}`);
  return r.reason;
}

describe('parseDigest accepts', () => {
  it.each([
    ['sha256', 64],
    ['sha512', 128],
  ] as const)('%s with exactly %i lower-case hex characters', (algorithm, length) => {
    const h = hex(length);
    const r = parseDigest(`${algorithm}:${h}`);
    expect(r).toEqual({ ok: true, digest: { algorithm, hex: h, value: `${algorithm}:${h}` } });
  });

  it('the digest node computes for real content (sha256 and sha512)', () => {
    const bytes = randomBytes(1000);
    for (const algorithm of ['sha256', 'sha512'] as const) {
      const value = `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
      const r = parseDigest(value);
      expect(r.ok).toBe(true);
      if (r.ok) {
        expect(r.digest.value).toBe(value);
        expect(r.digest.algorithm).toBe(algorithm);
        expect(`${r.digest.algorithm}:${r.digest.hex}`).toBe(value);
      }
    }
  });
});

describe('parseDigest refuses', () => {
  it('upper-case hex (the canonical form is lower-case, and the hex names a file)', () => {
    expect(parseDigest(`sha256:${hex(64).toUpperCase()}`).ok).toBe(false);
    // A single upper-case character is enough.
    expect(parseDigest(`sha256:A${hex(63)}`).ok).toBe(false);
    expect(parseDigest(`sha512:${hex(127)}F`).ok).toBe(false);
  });

  it('an upper-case algorithm', () => {
    expect(parseDigest(`SHA256:${hex(64)}`).ok).toBe(false);
  });

  it.each([0, 1, 32, 63, 65, 128])('sha256 with %i hex characters', (n) => {
    expect(reasonOf(`sha256:${hex(n)}`)).toMatch(/sha256/);
  });

  it.each([64, 127, 129, 256])('sha512 with %i hex characters', (n) => {
    expect(reasonOf(`sha512:${hex(n)}`)).toMatch(/sha512/);
  });

  it('a sha256 digest that says it is sha512 (length decides)', () => {
    expect(parseDigest(`sha512:${hex(64)}`).ok).toBe(false);
    expect(parseDigest(`sha256:${hex(128)}`).ok).toBe(false);
  });

  it.each([
    '..',
    '../..',
    'sha256:../../etc',
    `sha256:../${hex(61)}`,
    `sha256:${hex(60)}/../`,
    `sha256:${hex(63)}/`,
    `sha256:${hex(63)}\0`,
    `sha256:${hex(63)}.`,
    `sha256:${hex(63)}g`,
    `sha256:${hex(64)}:`,
    `sha256:${hex(64)}:${hex(64)}`,
    `sha256: ${hex(63)}`,
    ` sha256:${hex(64)}`,
    `sha256:${hex(64)} `,
    `sha256:${hex(64)}\n`,
    `sha256::${hex(63)}`,
  ])('path tricks and junk: %j', (input) => {
    expect(parseDigest(input).ok).toBe(false);
  });

  it.each(['', ':', `:${hex(64)}`, 'sha256', 'sha256:', 'latest', '3.20', hex(64)])('not a digest at all: %j', (input) => {
    expect(parseDigest(input).ok).toBe(false);
  });

  it('a well-formed but unsupported algorithm, saying it is not supported', () => {
    for (const algorithm of ['sha384', 'md5', 'blake3', 'sha1', 'multihash+base58']) {
      const reason = reasonOf(`${algorithm}:${hex(96)}`);
      expect(reason).toContain(algorithm);
      expect(reason).toMatch(/not supported/);
    }
  });

  it('an algorithm outside the spec grammar, without calling it merely unsupported', () => {
    for (const algorithm of ['SHA384', 'sha 256', 'sha256/', '-sha', 'sha__256', '../sha256']) {
      const reason = reasonOf(`${algorithm}:${hex(64)}`);
      expect(reason).not.toMatch(/not supported/);
    }
  });

  // Regression (fixed): ALGORITHMS is a plain object literal and parseDigest tests membership with `in`, so
  // names inherited from Object.prototype count as known algorithms.
  it('an unknown algorithm named like an Object.prototype member ("constructor") as not supported', () => {
    const reason = reasonOf(`constructor:${hex(64)}`);
    expect(reason).toMatch(/not supported/);
    expect(reason).not.toMatch(/native code/);
  });

  it('inherited Object.prototype names never parse as a digest', () => {
    for (const name of ['constructor', '__proto__', 'toString', 'valueOf', 'hasOwnProperty']) {
      expect(parseDigest(`${name}:${hex(64)}`).ok).toBe(false);
      expect(parseDigest(`${name}:x`).ok).toBe(false);
    }
  });

  it('keeps reasons short for huge input', () => {
    const reason = reasonOf(`sha256:${'z'.repeat(100_000)}`);
    expect(reason.length).toBeLessThan(300);
  });
});

describe('digestOf', () => {
  it.each([0, 1, 55, 56, 64, 1000, 65536])('matches node crypto for %i random bytes', (n) => {
    const bytes = randomBytes(n);
    expect(digestOf(bytes)).toBe(`sha256:${createHash('sha256').update(bytes).digest('hex')}`);
    expect(digestOf(bytes, 'sha512')).toBe(`sha512:${createHash('sha512').update(bytes).digest('hex')}`);
  });

  it('gives the well-known digest of the empty string', () => {
    // FIPS 180-2 test vector: SHA-256("") and SHA-256("abc").
    expect(digestOf(new Uint8Array(0))).toBe('sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(digestOf(Buffer.from('abc'))).toBe('sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it('produces something parseDigest accepts', () => {
    const bytes = randomBytes(123);
    expect(parseDigest(digestOf(bytes)).ok).toBe(true);
    expect(parseDigest(digestOf(bytes, 'sha512')).ok).toBe(true);
  });

  it('hashes only the view it is given, not the whole underlying buffer', () => {
    const whole = randomBytes(100);
    const view = new Uint8Array(whole.buffer, whole.byteOffset + 10, 20);
    expect(digestOf(view)).toBe(`sha256:${createHash('sha256').update(whole.subarray(10, 30)).digest('hex')}`);
  });
});

describe('newHasher', () => {
  it('hashes incrementally to the same digest as digestOf', () => {
    const bytes = randomBytes(5000);
    const h = newHasher('sha256');
    h.update(bytes.subarray(0, 1234));
    h.update(bytes.subarray(1234));
    expect(`sha256:${h.digest('hex')}`).toBe(digestOf(bytes));
  });
});

describe('isDigestLike', () => {
  it('tells a digest reference from a tag (tags cannot contain a colon)', () => {
    expect(isDigestLike(`sha256:${hex(64)}`)).toBe(true);
    expect(isDigestLike('sha256:bad')).toBe(true);
    expect(isDigestLike('latest')).toBe(false);
    expect(isDigestLike('3.20')).toBe(false);
  });
});
