import { describe, expect, it } from 'vitest';
import { parseManifest, type IndexManifest } from '../../src/oci/manifest.js';
import { describePolicy, missingChildren } from '../../src/push/push.js';
import { artifactTypeOf } from '../../src/oci/referrers.js';
import { parseContentRange } from '../../src/push/uploads.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const M = 'application/vnd.oci.image.manifest.v1+json';

function indexOf(manifests: unknown[]): IndexManifest {
  const r = parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests })));
  if (!r.ok || r.manifest.kind !== 'index') throw new Error('bad index');
  return r.manifest;
}

const INDEX = indexOf([
  { mediaType: M, digest: d('a'), size: 1, platform: { os: 'linux', architecture: 'amd64' } },
  { mediaType: M, digest: d('b'), size: 1, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
  { mediaType: M, digest: d('c'), size: 1, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
  {
    mediaType: M,
    digest: d('e'),
    size: 1,
    platform: { os: 'unknown', architecture: 'unknown' },
    annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': d('b') },
  },
  { mediaType: 'application/vnd.oci.image.index.v1+json', digest: d('f'), size: 1 },
]);

describe('missingChildren', () => {
  const nothing = () => false;

  it("'none' requires nothing", () => {
    expect(missingChildren(INDEX, 'none', nothing)).toEqual([]);
  });

  it("'all' requires every entry, naming each one's effective platform", () => {
    expect(missingChildren(INDEX, 'all', nothing)).toEqual([
      { digest: d('a'), mediaType: M, platform: 'linux/amd64' },
      { digest: d('b'), mediaType: M, platform: 'linux/arm64/v8' },
      { digest: d('c'), mediaType: M, platform: 'linux/arm/v7' },
      { digest: d('e'), mediaType: M, platform: 'linux/arm64/v8' },
      { digest: d('f'), mediaType: 'application/vnd.oci.image.index.v1+json', platform: undefined },
    ]);
    expect(missingChildren(INDEX, 'all', (x) => x !== d('c')).map((m) => m.digest)).toEqual([d('c')]);
  });

  it('a platform list requires those image manifests only, normalised like containerd', () => {
    expect(missingChildren(INDEX, ['linux/arm64'], nothing).map((m) => m.platform)).toEqual(['linux/arm64/v8']);
    expect(missingChildren(INDEX, ['linux/arm', 'linux/amd64'], nothing).map((m) => m.platform)).toEqual(['linux/amd64', 'linux/arm/v7']);
    expect(missingChildren(INDEX, ['linux/arm/v6', 'linux/s390x'], nothing)).toEqual([]);
    expect(missingChildren(INDEX, ['linux/arm64'], (x) => x === d('b'))).toEqual([]);
  });

  it('lists a digest once even if the index repeats it', () => {
    const twice = indexOf([
      { mediaType: M, digest: d('a'), size: 1, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: M, digest: d('a'), size: 1, platform: { os: 'linux', architecture: 'amd64' } },
    ]);
    expect(missingChildren(twice, 'all', nothing)).toHaveLength(1);
  });

  it('describes the policy for messages', () => {
    expect(describePolicy('all')).toBe('all');
    expect(describePolicy(['linux/amd64', 'linux/arm64'])).toBe('[linux/amd64, linux/arm64]');
  });
});

describe('parseContentRange', () => {
  it.each([
    ['0-99', { start: 0, end: 99 }],
    ['100-100', { start: 100, end: 100 }],
    ['bytes 5-9', { start: 5, end: 9 }],
    ['bytes=5-9', { start: 5, end: 9 }],
    ['5-9/10', { start: 5, end: 9 }],
    ['5-9/*', { start: 5, end: 9 }],
  ])('accepts %s', (header, range) => {
    expect(parseContentRange(header)).toEqual(range);
  });

  it.each(['', '9-5', '-5', '5-', 'bytes */10', 'a-b', '1-2-3', '0-99999999999999999'])('refuses %j', (header) => {
    expect(parseContentRange(header)).toBeUndefined();
  });
});

describe('artifactTypeOf', () => {
  const config = { mediaType: 'application/vnd.example.config', digest: d('1'), size: 2 };
  it('is artifactType when set, else the config media type of an image manifest, else none', () => {
    expect(artifactTypeOf({ kind: 'image', mediaType: M, artifactType: 'application/x', config, layers: [] })).toBe('application/x');
    expect(artifactTypeOf({ kind: 'image', mediaType: M, config, layers: [] })).toBe('application/vnd.example.config');
    expect(artifactTypeOf(INDEX)).toBeUndefined();
  });
});
