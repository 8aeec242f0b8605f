import { describe, expect, it } from 'vitest';
import { digestOf } from '../../src/oci/digest.js';
import {
  ATTESTATION_DIGEST_KEY,
  ATTESTATION_TYPE_KEY,
  indexChildren,
  parseManifest,
  referencedBlobs,
  type IndexManifest,
  type ManifestParse,
  type ParsedManifest,
} from '../../src/oci/manifest.js';
import { MediaType } from '../../src/oci/media-types.js';

const d = (seed: string) => digestOf(Buffer.from(seed));

function bytesOf(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

function ok(r: ManifestParse): ParsedManifest {
  if (!r.ok) throw new Error(`expected a manifest, got: ${r.reason}`);
  return r.manifest;
}

function reason(r: ManifestParse): string {
  if (r.ok) throw new Error(`expected a refusal, got a ${r.manifest.kind}`);
  return r.reason;
}

const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64', variant: 'v8' };
const unknown = { os: 'unknown', architecture: 'unknown' };

function child(seed: string, platform?: Record<string, string>, mediaType: string = MediaType.ociManifest, annotations?: Record<string, string>) {
  return {
    mediaType,
    digest: d(seed),
    size: 500 + seed.length,
    ...(platform ? { platform } : {}),
    ...(annotations ? { annotations } : {}),
  };
}

function ociIndex<T>(manifests: T[], extra: object = {}) {
  return { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests, ...extra };
}

function imageManifest(mediaType: string | undefined, extra: object = {}) {
  const configType = mediaType === MediaType.dockerManifest ? MediaType.dockerConfig : MediaType.ociConfig;
  const layerType =
    mediaType === MediaType.dockerManifest
      ? 'application/vnd.docker.image.rootfs.diff.tar.gzip'
      : 'application/vnd.oci.image.layer.v1.tar+gzip';
  return {
    schemaVersion: 2,
    ...(mediaType ? { mediaType } : {}),
    config: { mediaType: configType, digest: d('config'), size: 1234 },
    layers: [
      { mediaType: layerType, digest: d('layer0'), size: 1000 },
      { mediaType: layerType, digest: d('layer1'), size: 2000 },
    ],
    ...extra,
  };
}

describe('parseManifest: image indexes', () => {
  it('reads an OCI index: kind, media type, children with platforms, annotations', () => {
    const body = ociIndex([child('a', amd64), child('b', arm64)], { annotations: { 'org.opencontainers.image.created': 'now' } });
    const m = ok(parseManifest(bytesOf(body), MediaType.ociIndex));
    expect(m.kind).toBe('index');
    expect(m.mediaType).toBe(MediaType.ociIndex);
    if (m.kind !== 'index') return;
    expect(m.children.map((c) => c.digest)).toEqual([d('a'), d('b')]);
    expect(m.children[0]!.platform).toEqual(amd64);
    expect(m.children[1]!.platform).toEqual(arm64);
    expect(m.children[1]!.size).toBe(body.manifests[1]!.size);
    expect(m.annotations).toEqual({ 'org.opencontainers.image.created': 'now' });
  });

  it('reads a Docker manifest list', () => {
    const body = {
      schemaVersion: 2,
      mediaType: MediaType.dockerManifestList,
      manifests: [child('a', amd64, MediaType.dockerManifest), child('b', { os: 'linux', architecture: 'arm', variant: 'v7' }, MediaType.dockerManifest)],
    };
    const m = ok(parseManifest(bytesOf(body), MediaType.dockerManifestList));
    expect(m).toMatchObject({ kind: 'index', mediaType: MediaType.dockerManifestList });
    if (m.kind === 'index') expect(m.children.map((c) => c.mediaType)).toEqual([MediaType.dockerManifest, MediaType.dockerManifest]);
  });

  it('accepts an empty index', () => {
    const m = ok(parseManifest(bytesOf(ociIndex([]))));
    expect(m.kind).toBe('index');
    if (m.kind === 'index') expect(m.children).toEqual([]);
  });

  it('keeps a subject and artifactType', () => {
    const subject = child('subject');
    const m = ok(parseManifest(bytesOf(ociIndex([child('a', amd64)], { subject, artifactType: 'application/x-example' }))));
    expect(m.subject).toEqual(subject);
    expect(m.artifactType).toBe('application/x-example');
  });
});

describe('parseManifest: image manifests', () => {
  it('reads an OCI image manifest: config and layers', () => {
    const body = imageManifest(MediaType.ociManifest);
    const m = ok(parseManifest(bytesOf(body), MediaType.ociManifest));
    expect(m.kind).toBe('image');
    expect(m.mediaType).toBe(MediaType.ociManifest);
    if (m.kind !== 'image') return;
    expect(m.config).toEqual(body.config);
    expect(m.layers).toEqual(body.layers);
    expect(referencedBlobs(m).map((b) => b.digest)).toEqual([d('config'), d('layer0'), d('layer1')]);
  });

  it('reads a Docker image manifest', () => {
    const m = ok(parseManifest(bytesOf(imageManifest(MediaType.dockerManifest)), MediaType.dockerManifest));
    expect(m).toMatchObject({ kind: 'image', mediaType: MediaType.dockerManifest });
    if (m.kind === 'image') expect(m.config.mediaType).toBe(MediaType.dockerConfig);
  });

  it('reads an artifact manifest (OCI 1.1: artifactType, empty config, subject)', () => {
    const body = {
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      artifactType: 'application/vnd.example.sbom',
      config: { mediaType: MediaType.ociEmpty, digest: digestOf(Buffer.from('{}')), size: 2 },
      layers: [{ mediaType: 'application/json', digest: d('sbom'), size: 77 }],
      subject: child('img'),
    };
    const m = ok(parseManifest(bytesOf(body)));
    expect(m).toMatchObject({ kind: 'image', artifactType: 'application/vnd.example.sbom' });
    expect(m.subject?.digest).toBe(d('img'));
  });

  it('accepts a manifest without layers entries', () => {
    const m = ok(parseManifest(bytesOf(imageManifest(MediaType.ociManifest, { layers: [] }))));
    if (m.kind === 'image') expect(referencedBlobs(m)).toHaveLength(1);
  });
});

describe('parseManifest: where the media type comes from', () => {
  it('the body mediaType wins over the Content-Type', () => {
    const m = ok(parseManifest(bytesOf(ociIndex([child('a', amd64)])), MediaType.dockerManifest));
    expect(m).toMatchObject({ kind: 'index', mediaType: MediaType.ociIndex });
    const i = ok(parseManifest(bytesOf(imageManifest(MediaType.dockerManifest)), MediaType.ociIndex));
    expect(i).toMatchObject({ kind: 'image', mediaType: MediaType.dockerManifest });
  });

  it('without a body mediaType, the Content-Type decides (parameters and case ignored)', () => {
    const { mediaType: _, ...bare } = ociIndex([child('a', amd64)]);
    const m = ok(parseManifest(bytesOf(bare), `${MediaType.dockerManifestList.toUpperCase()}; charset=utf-8`));
    expect(m).toMatchObject({ kind: 'index', mediaType: MediaType.dockerManifestList });
    const i = ok(parseManifest(bytesOf(imageManifest(undefined)), `  ${MediaType.dockerManifest} ; q=1`));
    expect(i).toMatchObject({ kind: 'image', mediaType: MediaType.dockerManifest });
  });

  it('a Content-Type naming an image manifest is not overridden by a manifests array in the body', () => {
    const { mediaType: _, ...bare } = ociIndex([child('a', amd64)]);
    const r = parseManifest(bytesOf(bare), MediaType.ociManifest);
    expect(r.ok).toBe(false);
  });

  it('with neither, the shape decides: manifests[] is an OCI index, config+layers an OCI image manifest', () => {
    const { mediaType: _, ...bareIndex } = ociIndex([child('a', amd64)]);
    expect(ok(parseManifest(bytesOf(bareIndex)))).toMatchObject({ kind: 'index', mediaType: MediaType.ociIndex });
    expect(ok(parseManifest(bytesOf(imageManifest(undefined)), null))).toMatchObject({ kind: 'image', mediaType: MediaType.ociManifest });
    expect(ok(parseManifest(bytesOf(imageManifest(undefined)), ''))).toMatchObject({ kind: 'image', mediaType: MediaType.ociManifest });
  });

  it('a generic Content-Type leaves the shape to decide the kind', () => {
    const { mediaType: _, ...bareIndex } = ociIndex([child('a', amd64)]);
    expect(ok(parseManifest(bytesOf(bareIndex), 'application/json')).kind).toBe('index');
    expect(ok(parseManifest(bytesOf(imageManifest(undefined)), 'application/json')).kind).toBe('image');
  });
});

describe('parseManifest: refusals name what is wrong', () => {
  it('invalid JSON', () => {
    expect(reason(parseManifest(Buffer.from('{"schemaVersion": 2,')))).toMatch(/JSON/);
    expect(reason(parseManifest(Buffer.from('')))).toMatch(/JSON/);
    expect(reason(parseManifest(Buffer.from([0xff, 0xfe, 0x00])))).toMatch(/JSON/);
  });

  it.each(['[]', '"index"', '2', 'null', 'true'])('JSON that is not an object: %s', (text) => {
    expect(reason(parseManifest(Buffer.from(text)))).toMatch(/not a JSON object/);
  });

  it('a bad digest in an index entry names manifests.<i>.digest', () => {
    const body = ociIndex([child('a', amd64), { ...child('b', arm64), digest: 'sha256:NOTHEX' }]);
    const r = reason(parseManifest(bytesOf(body)));
    expect(r).toMatch(/index/);
    expect(r).toContain('manifests.1.digest');
  });

  it('a digest with a path in it is refused', () => {
    const body = ociIndex([{ ...child('a', amd64), digest: 'sha256:../../../etc/passwd' }]);
    expect(reason(parseManifest(bytesOf(body)))).toContain('manifests.0.digest');
  });

  it('a negative size names the field', () => {
    const body = ociIndex([child('a', amd64), child('b', arm64), { ...child('c', amd64), size: -1 }]);
    expect(reason(parseManifest(bytesOf(body)))).toContain('manifests.2.size');
    const img = imageManifest(MediaType.ociManifest, { config: { mediaType: MediaType.ociConfig, digest: d('c'), size: -5 } });
    expect(reason(parseManifest(bytesOf(img)))).toContain('config.size');
  });

  it('a fractional or string size names the field', () => {
    expect(reason(parseManifest(bytesOf(ociIndex([{ ...child('a'), size: 1.5 }]))))).toContain('manifests.0.size');
    expect(reason(parseManifest(bytesOf(ociIndex([{ ...child('a'), size: '12' }]))))).toContain('manifests.0.size');
  });

  it('a bad layer digest names layers.<i>.digest', () => {
    const body = imageManifest(MediaType.ociManifest);
    body.layers[1]!.digest = `sha256:${'0'.repeat(63)}`;
    const r = reason(parseManifest(bytesOf(body)));
    expect(r).toMatch(/image manifest/);
    expect(r).toContain('layers.1.digest');
  });

  it('a missing config names config', () => {
    const { config: _, ...noConfig } = imageManifest(MediaType.ociManifest);
    expect(reason(parseManifest(bytesOf(noConfig)))).toContain('config');
  });

  it('schemaVersion other than 2 (schema 1 manifests) names schemaVersion', () => {
    expect(reason(parseManifest(bytesOf({ ...ociIndex([]), schemaVersion: 1 })))).toContain('schemaVersion');
    expect(reason(parseManifest(bytesOf({ ...imageManifest(MediaType.dockerManifest), schemaVersion: 1 })))).toContain('schemaVersion');
    const { schemaVersion: _, ...noVersion } = imageManifest(MediaType.ociManifest);
    expect(reason(parseManifest(bytesOf(noVersion)))).toContain('schemaVersion');
  });

  it('an index whose manifests is not an array', () => {
    expect(reason(parseManifest(bytesOf({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: {} })))).toContain('manifests');
  });

  it('a descriptor without mediaType', () => {
    const { mediaType: _, ...noType } = child('a', amd64);
    expect(reason(parseManifest(bytesOf(ociIndex([noType]))))).toContain('manifests.0.mediaType');
  });

  it('a platform without architecture', () => {
    expect(reason(parseManifest(bytesOf(ociIndex([child('a', { os: 'linux' })]))))).toContain('manifests.0.platform.architecture');
  });

  it('non-string annotation values', () => {
    const body = ociIndex([{ ...child('a', amd64), annotations: { k: 1 } }]);
    expect(reason(parseManifest(bytesOf(body)))).toContain('manifests.0.annotations');
  });
});

describe('parseManifest never changes bytes', () => {
  it("leaves the caller's buffer exactly as it was, odd formatting included", () => {
    // Whitespace, key order and escapes that a re-serialisation would change.
    const text =
      '{\n  "schemaVersion" : 2,\r\n\t"manifests": [ {"size": 7, "digest": "' +
      d('a') +
      '", "mediaType": "application/vnd.oci.image.manifest.v1+json", "platform": {"architecture":"amd64","os":"linux"}, "annotations": {"x": "\\u00e9\\/"}} ],\n' +
      '"mediaType":"application/vnd.oci.image.index.v1+json" , "unknownField": {"kept": true}\n}\n';
    const buf = Buffer.from(text, 'utf8');
    const before = Buffer.from(buf);
    const digestBefore = digestOf(buf);
    const m = ok(parseManifest(buf, MediaType.ociIndex));
    expect(m.kind).toBe('index');
    expect(buf.equals(before)).toBe(true);
    expect(digestOf(buf)).toBe(digestBefore);
    // Mutating the parsed result does not reach back into the bytes either.
    if (m.kind === 'index') {
      m.children[0]!.size = 999;
      m.children.push(child('b', arm64) as (typeof m.children)[number]);
    }
    expect(buf.equals(before)).toBe(true);
  });

  it('leaves a buffer untouched when it refuses it', () => {
    const buf = Buffer.from('{"schemaVersion":2,"manifests":[{"digest":"sha256:x"}]}');
    const before = Buffer.from(buf);
    expect(parseManifest(buf).ok).toBe(false);
    expect(buf.equals(before)).toBe(true);
  });

  it('reads a Uint8Array view over a larger buffer correctly and leaves it alone', () => {
    const json = bytesOf(ociIndex([child('a', amd64)]));
    const big = Buffer.concat([Buffer.from('GARBAGE'), json, Buffer.from('TRAILING')]);
    const before = Buffer.from(big);
    const view = new Uint8Array(big.buffer, big.byteOffset + 7, json.length);
    expect(ok(parseManifest(view)).kind).toBe('index');
    expect(big.equals(before)).toBe(true);
  });
});

describe('indexChildren', () => {
  function attestation(seed: string, target: string | undefined) {
    return child('att-' + seed, unknown, MediaType.ociManifest, {
      [ATTESTATION_TYPE_KEY]: 'attestation-manifest',
      ...(target !== undefined ? { [ATTESTATION_DIGEST_KEY]: target } : {}),
    });
  }

  function index(manifests: unknown[]): IndexManifest {
    const m = ok(parseManifest(bytesOf(ociIndex(manifests))));
    if (m.kind !== 'index') throw new Error('not an index');
    return m;
  }

  it('uses the annotation keys buildx writes', () => {
    expect(ATTESTATION_TYPE_KEY).toBe('vnd.docker.reference.type');
    expect(ATTESTATION_DIGEST_KEY).toBe('vnd.docker.reference.digest');
  });

  it('maps buildx attestation entries to the platform of the manifest they describe', () => {
    const idx = index([child('a', amd64), child('b', arm64), attestation('a', d('a')), attestation('b', d('b'))]);
    const kids = indexChildren(idx);
    expect(kids).toHaveLength(4);
    expect(kids.map((k) => k.descriptor.digest)).toEqual(idx.children.map((c) => c.digest));
    expect(kids[0]).toEqual({ descriptor: idx.children[0], platform: amd64 });
    expect(kids[1]).toEqual({ descriptor: idx.children[1], platform: arm64 });
    expect(kids[2]!.platform).toEqual(amd64);
    expect(kids[2]!.attestationFor).toBe(d('a'));
    expect(kids[3]!.platform).toEqual(arm64);
    expect(kids[3]!.attestationFor).toBe(d('b'));
    // The descriptor itself is unchanged: the index still says unknown/unknown.
    expect(kids[2]!.descriptor.platform).toEqual(unknown);
  });

  it('does not depend on order: an attestation listed before its subject', () => {
    const kids = indexChildren(index([attestation('b', d('b')), child('b', arm64)]));
    expect(kids[0]!.platform).toEqual(arm64);
  });

  it('leaves an attestation pointing at a digest not in the index as unknown/unknown', () => {
    const kids = indexChildren(index([child('a', amd64), attestation('x', d('missing'))]));
    expect(kids[1]!.platform).toEqual(unknown);
    expect(kids[1]!.attestationFor).toBe(d('missing'));
  });

  it('leaves an attestation without a digest annotation as unknown/unknown', () => {
    const kids = indexChildren(index([child('a', amd64), attestation('x', undefined)]));
    expect(kids[1]!.platform).toEqual(unknown);
    expect(kids[1]!.attestationFor).toBeUndefined();
  });

  it('treats an unknown/unknown entry without the attestation annotation as what it says', () => {
    const kids = indexChildren(
      index([child('a', amd64), child('sig', unknown, MediaType.ociManifest, { [ATTESTATION_DIGEST_KEY]: d('a') })]),
    );
    expect(kids[1]!.platform).toEqual(unknown);
    expect(kids[1]!.attestationFor).toBeUndefined();
  });

  it('other reference types are not attestations', () => {
    const kids = indexChildren(
      index([child('a', amd64), child('o', unknown, MediaType.ociManifest, { [ATTESTATION_TYPE_KEY]: 'something-else', [ATTESTATION_DIGEST_KEY]: d('a') })]),
    );
    expect(kids[1]!.platform).toEqual(unknown);
  });

  it('a child without platform has none', () => {
    const kids = indexChildren(index([child('nested-index', undefined, MediaType.ociIndex)]));
    expect(kids[0]!.platform).toBeUndefined();
  });
});
