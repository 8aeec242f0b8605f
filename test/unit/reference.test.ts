import { describe, expect, it } from 'vitest';
import { digestOf } from '../../src/oci/digest.js';
import {
  formatReference,
  isValidRepositoryName,
  isValidTag,
  looksLikeRegistryHost,
  MAX_NAME_LENGTH,
  parseImageReference,
} from '../../src/oci/reference.js';

const DIGEST = digestOf(Buffer.from('reference test'));

describe('isValidRepositoryName (distribution spec grammar)', () => {
  it.each([
    'a',
    '0',
    'a/b',
    'alpine',
    'library/alpine',
    'a.b-c__d/e',
    'a.b',
    'a_b',
    'a__b',
    'a-b',
    'a--b',
    'a---b',
    'org/team/app',
    'a0/b1/c2/d3/e4',
    'docker.io/library/alpine',
    'x'.repeat(MAX_NAME_LENGTH),
  ])('accepts %j', (name) => {
    expect(isValidRepositoryName(name)).toBe(true);
  });

  it.each([
    '',
    'A',
    'Alpine',
    'library/Alpine',
    '..',
    '.',
    'a/..',
    'a/.',
    'a/../b',
    '../a',
    './a',
    'a//b',
    '/a',
    'a/',
    '/',
    'a%2Fb',
    'a%2fb',
    'a\\b',
    'a b',
    'a:b',
    'a@b',
    'a?b',
    'a#b',
    '-a',
    'a-',
    '_a',
    'a_',
    'a.',
    '.a',
    'a...b',
    'a___b',
    'a._b',
    'a.-b',
    'a\nb',
    'a\0',
    'ä',
  ])('refuses %j', (name) => {
    expect(isValidRepositoryName(name)).toBe(false);
  });

  it('limits the length to 255 characters', () => {
    expect(MAX_NAME_LENGTH).toBe(255);
    expect(isValidRepositoryName('a'.repeat(256))).toBe(false);
    // A long name made of valid components is still measured as a whole.
    const components = Array.from({ length: 64 }, () => 'abc');
    const name = components.join('/'); // 64*3 + 63 = 255
    expect(name.length).toBe(255);
    expect(isValidRepositoryName(name)).toBe(true);
    expect(isValidRepositoryName(`${name}a`)).toBe(false);
  });
});

describe('isValidTag', () => {
  it.each(['latest', '3.20', 'v1.2.3-rc.1', '_', '_x', 'A', 'Z9', 'a_b-c.d', '0', 'x'.repeat(128), 'sha256-' + 'a'.repeat(64) + '.sig'])(
    'accepts %j',
    (tag) => {
      expect(isValidTag(tag)).toBe(true);
    },
  );

  it.each(['', '.hidden', '-x', 'x'.repeat(129), 'a:b', 'a/b', 'a@b', 'a b', 'a+b', 'é', 'latest\n', '..', `sha256:${'a'.repeat(64)}`])(
    'refuses %j',
    (tag) => {
      expect(isValidTag(tag)).toBe(false);
    },
  );
});

describe('looksLikeRegistryHost', () => {
  it.each(['docker.io', 'ghcr.io', 'registry-1.docker.io', 'localhost', 'localhost:5000', '127.0.0.1', '127.0.0.1:5000', 'myhost:443', '[::1]:5000'])(
    '%s is a host',
    (c) => {
      expect(looksLikeRegistryHost(c)).toBe(true);
    },
  );

  it.each(['library', 'alpine', 'myorg', 'local', 'localhostx'])('%s is a path component', (c) => {
    expect(looksLikeRegistryHost(c)).toBe(false);
  });
});

describe('parseImageReference', () => {
  it('docker.io/library/alpine:3.20', () => {
    expect(parseImageReference('docker.io/library/alpine:3.20')).toEqual({
      registry: 'docker.io',
      repository: 'library/alpine',
      tag: '3.20',
      digest: undefined,
    });
  });

  it('ghcr.io/org/app@sha256:…', () => {
    expect(parseImageReference(`ghcr.io/org/app@${DIGEST}`)).toEqual({
      registry: 'ghcr.io',
      repository: 'org/app',
      tag: undefined,
      digest: DIGEST,
    });
  });

  it('tag and digest together', () => {
    expect(parseImageReference(`ghcr.io/org/app:v1@${DIGEST}`)).toEqual({
      registry: 'ghcr.io',
      repository: 'org/app',
      tag: 'v1',
      digest: DIGEST,
    });
  });

  it('localhost:5000/x: the port is not a tag', () => {
    expect(parseImageReference('localhost:5000/x')).toEqual({
      registry: 'localhost:5000',
      repository: 'x',
      tag: 'latest',
      digest: undefined,
    });
  });

  it('127.0.0.1:5000/a/b:t', () => {
    expect(parseImageReference('127.0.0.1:5000/a/b:t')).toEqual({
      registry: '127.0.0.1:5000',
      repository: 'a/b',
      tag: 't',
      digest: undefined,
    });
  });

  it('localhost/x without port', () => {
    expect(parseImageReference('localhost/x:1')).toMatchObject({ registry: 'localhost', repository: 'x', tag: '1' });
  });

  it('alpine → no registry, tag latest', () => {
    expect(parseImageReference('alpine')).toEqual({ registry: undefined, repository: 'alpine', tag: 'latest', digest: undefined });
  });

  it('library/alpine:edge → no registry (library is not a host)', () => {
    expect(parseImageReference('library/alpine:edge')).toEqual({
      registry: undefined,
      repository: 'library/alpine',
      tag: 'edge',
      digest: undefined,
    });
  });

  it('a digest alone gets no default tag', () => {
    expect(parseImageReference(`alpine@${DIGEST}`).tag).toBeUndefined();
  });

  it('trims white space', () => {
    expect(parseImageReference('  alpine:3  ')).toMatchObject({ repository: 'alpine', tag: '3' });
  });

  it.each([
    'alpine@sha256:abc',
    `alpine@sha256:${'A'.repeat(64)}`,
    'alpine@',
    `alpine@md5:${'a'.repeat(32)}`,
    'alpine@latest',
  ])('refuses a bad digest: %s', (ref) => {
    expect(() => parseImageReference(ref)).toThrow();
  });

  it('names the bad digest problem in the error', () => {
    expect(() => parseImageReference('alpine@sha256:abc')).toThrow(/alpine@sha256:abc/);
  });

  it.each(['alpine:', 'alpine:.x', 'alpine:-x', `alpine:${'x'.repeat(129)}`, 'alpine:a+b'])('refuses a bad tag: %s', (ref) => {
    expect(() => parseImageReference(ref)).toThrow(/not a valid tag/);
  });

  it.each(['Alpine', 'docker.io/Library/alpine', 'docker.io/', 'docker.io//alpine', '', 'a/../b', 'docker.io/a%2Fb', 'docker.io/../x'])(
    'refuses a bad repository: %j',
    (ref) => {
      expect(() => parseImageReference(ref)).toThrow();
    },
  );

  // Regression (fixed): the registry part is taken as-is once it "looks like" a host (has a dot or a colon), and is
  // never checked against the reference grammar (domain components, numeric port).
  for (const ref of ['../x', 'a..b/x', 'host:abc/x', '-bad.example/x', 'a.b:/x']) {
    it(`refuses an invalid registry host: ${ref}`, () => {
      expect(() => parseImageReference(ref)).toThrow();
    });
  }

  it('round-trips through formatReference', () => {
    for (const ref of ['docker.io/library/alpine:3.20', `ghcr.io/org/app@${DIGEST}`, 'localhost:5000/x:latest', `127.0.0.1:5000/a/b:t@${DIGEST}`, 'alpine:latest']) {
      expect(formatReference(parseImageReference(ref))).toBe(ref);
    }
  });

  it('formatReference adds the latest tag it defaulted', () => {
    expect(formatReference(parseImageReference('alpine'))).toBe('alpine:latest');
  });
});
