// Manifest pushes over plain HTTP: who may push where, exact bytes, validation with the spec's
// error codes, index policies with attestations, and DELETE rules.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { OCI, PULL_TOKEN, PUSH_AUTH, buildImage, call, pushBlob, pushImage, putManifest, sha256, type BuiltImage } from '../support/push-client.js';

const NO_UPSTREAM = [{ url: 'http://127.0.0.1:9' }];
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const mirrors: TestMirror[] = [];

async function mirror(push: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<TestMirror> {
  const m = await startTestMirror({ upstreams: NO_UPSTREAM, auth: PUSH_AUTH, push: { enabled: true, ...push }, ...extra });
  mirrors.push(m);
  return m;
}

afterAll(async () => {
  for (const m of mirrors) {
    expect(m.logs.filter((l) => l.includes('"level":"error"'))).toEqual([]);
    await m.stop({ removeData: true });
  }
});

function image(arch: string): BuiltImage {
  return buildImage({ os: 'linux', architecture: arch }, [randomBytes(200), randomBytes(300)]);
}

/** A buildx-style attestation manifest (platform unknown/unknown) describing `subject`. */
function attestationFor(subject: BuiltImage): BuiltImage {
  const statement = Buffer.from(JSON.stringify({ subject: [{ digest: { sha256: subject.digest.slice(7) } }], nonce: randomBytes(8).toString('hex') }));
  return buildImage({ os: 'unknown', architecture: 'unknown' }, [statement]);
}

function index(entries: Array<{ img: BuiltImage; platform?: { os: string; architecture: string; variant?: string }; attests?: BuiltImage }>): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI.index,
      manifests: entries.map((e) => ({
        mediaType: OCI.manifest,
        digest: e.img.digest,
        size: e.img.size,
        platform: e.platform ?? { os: 'unknown', architecture: 'unknown' },
        ...(e.attests
          ? { annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': e.attests.digest } }
          : {}),
      })),
    }),
  );
}

describe('who may push where', () => {
  let m: TestMirror;
  let readOnly: TestMirror;
  beforeAll(async () => {
    m = await mirror({});
    readOnly = await startTestMirror({ upstreams: NO_UPSTREAM, auth: PUSH_AUTH });
    mirrors.push(readOnly);
  });

  it('without credentials: 401 with a challenge', async () => {
    const r = await putManifest(m.url, 'local/app', 'v1', Buffer.from('{}'), OCI.manifest, null as unknown as string);
    expect(r.status).toBe(401);
    expect(r.errors?.[0]?.code).toBe('UNAUTHORIZED');
    expect(r.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
  });

  it('with a pull-only token: 403 DENIED (but it may pull)', async () => {
    const img = image('amd64');
    expect((await pushImage(m.url, 'local/app', img, 'v1')).status).toBe(201);
    const r = await putManifest(m.url, 'local/app', 'v2', img.bytes, OCI.manifest, PULL_TOKEN);
    expect(r.status).toBe(403);
    expect(r.errors?.[0]?.code).toBe('DENIED');
    expect(r.errors?.[0]?.message).toContain('may not push');
    const pulled = await call(m.url, 'GET', '/v2/local/app/manifests/v1', { token: PULL_TOKEN });
    expect(pulled.status).toBe(200);
    expect(pulled.body.equals(img.bytes)).toBe(true);
  });

  it('to a name routed upstream: 403 DENIED naming the local namespace', async () => {
    for (const path of ['/v2/library/alpine/blobs/uploads/', '/v2/127.0.0.1:9/library/alpine/blobs/uploads/', '/v2/local/alpine/blobs/uploads/?ns=127.0.0.1:9']) {
      const r = await call(m.url, 'POST', path);
      expect(r.status).toBe(403);
      expect(r.errors?.[0]?.code).toBe('DENIED');
      expect(r.errors?.[0]?.message).toContain('push to local/');
    }
    const put = await putManifest(m.url, 'library/alpine', 'latest', Buffer.from('{}'), OCI.manifest);
    expect(put.status).toBe(403);
  });

  it('when push is disabled: 405 UNSUPPORTED', async () => {
    const r = await call(readOnly.url, 'POST', '/v2/local/app/blobs/uploads/');
    expect(r.status).toBe(405);
    expect(r.errors?.[0]?.code).toBe('UNSUPPORTED');
    expect(r.errors?.[0]?.message).toContain('push is disabled');
    expect((await putManifest(readOnly.url, 'local/app', 'v1', Buffer.from('{}'), OCI.manifest)).status).toBe(405);
  });
});

describe('manifest PUT', () => {
  let m: TestMirror;
  beforeAll(async () => {
    m = await mirror({ indexChildren: 'all' });
  });

  it('stores the exact bytes sent and serves them with the digest of those bytes', async () => {
    const img = image('arm64');
    for (const b of [img.config, ...img.layers]) await pushBlob(m.url, 'local/exact', b);
    const parsed = JSON.parse(img.bytes.toString()) as { config: unknown; layers: unknown };
    // Escaped slashes, odd key order and whitespace, CRLF, no trailing newline.
    const odd = Buffer.from(
      `{\r\n\t"layers" : ${JSON.stringify(parsed.layers)},\r\n  "config":${JSON.stringify(parsed.config)} ,` +
        `"mediaType":"application\\/vnd.oci.image.manifest.v1+json",  "schemaVersion" :2}`,
    );
    const put = await putManifest(m.url, 'local/exact', 'odd', odd, OCI.manifest);
    expect(put.status, put.body.toString()).toBe(201);
    expect(put.headers.get('docker-content-digest')).toBe(sha256(odd));
    expect(put.headers.get('location')).toBe(`/v2/local/exact/manifests/${sha256(odd)}`);
    for (const ref of ['odd', sha256(odd)]) {
      const got = await call(m.url, 'GET', `/v2/local/exact/manifests/${ref}`);
      expect(got.status).toBe(200);
      expect(got.body.equals(odd)).toBe(true);
      expect(got.headers.get('docker-content-digest')).toBe(sha256(odd));
      expect(got.headers.get('content-type')).toBe(OCI.manifest);
    }
    const tags = await call(m.url, 'GET', '/v2/local/exact/tags/list');
    expect(JSON.parse(tags.body.toString())).toEqual({ name: 'local/exact', tags: ['odd'] });
  });

  it('keeps a Docker schema 2 media type as sent', async () => {
    const img = image('amd64');
    for (const b of [img.config, ...img.layers]) await pushBlob(m.url, 'local/docker', b);
    const bytes = Buffer.from(img.bytes.toString().replace(OCI.manifest, DOCKER_MANIFEST));
    expect((await putManifest(m.url, 'local/docker', 'v1', bytes, DOCKER_MANIFEST)).status).toBe(201);
    const got = await call(m.url, 'HEAD', '/v2/local/docker/manifests/v1');
    expect(got.headers.get('content-type')).toBe(DOCKER_MANIFEST);
  });

  it('an image manifest needs its config and layers: MANIFEST_BLOB_UNKNOWN per missing blob, digest in detail', async () => {
    const img = image('amd64');
    await pushBlob(m.url, 'local/partial', img.config);
    const r = await putManifest(m.url, 'local/partial', 'v1', img.bytes, OCI.manifest);
    expect(r.status).toBe(400);
    expect(r.errors?.map((e) => e.code)).toEqual(['MANIFEST_BLOB_UNKNOWN', 'MANIFEST_BLOB_UNKNOWN']);
    expect(r.errors?.map((e) => e.detail?.digest)).toEqual(img.layers.map(sha256));
    expect(r.errors?.[0]?.message).toContain('layer 1 of 2');
    expect((await call(m.url, 'GET', '/v2/local/partial/manifests/v1')).status).toBe(404);
  });

  it('refuses bad input with the right status and code', async () => {
    const img = image('amd64');
    await pushImage(m.url, 'local/bad', img);
    const cases: Array<[string, string, Buffer, string, number, string]> = [
      ['wrong digest in the URL', sha256(Buffer.from('other')), img.bytes, OCI.manifest, 400, 'DIGEST_INVALID'],
      ['unsupported digest algorithm', `md5:${'a'.repeat(32)}`, img.bytes, OCI.manifest, 400, 'DIGEST_INVALID'],
      ['not JSON', 'v1', Buffer.from('{nope'), OCI.manifest, 400, 'MANIFEST_INVALID'],
      ['empty body', 'v1', Buffer.alloc(0), OCI.manifest, 400, 'MANIFEST_INVALID'],
      ['Content-Type disagrees with mediaType', 'v1', img.bytes, OCI.index, 400, 'MANIFEST_INVALID'],
      ['schema 1', 'v1', Buffer.from('{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}'), 'application/json', 400, 'MANIFEST_INVALID'],
      ['invalid tag', '-bad-tag', img.bytes, OCI.manifest, 400, 'MANIFEST_INVALID'],
      ['an index with a bad child digest', 'v1', Buffer.from(`{"schemaVersion":2,"mediaType":"${OCI.index}","manifests":[{"mediaType":"${OCI.manifest}","digest":"sha256:xyz","size":1}]}`), OCI.index, 400, 'MANIFEST_INVALID'],
    ];
    for (const [what, ref, body, type, status, code] of cases) {
      const r = await putManifest(m.url, 'local/bad', ref, body, type);
      expect([what, r.status, r.errors?.[0]?.code]).toEqual([what, status, code]);
    }
    const wrongSize = Buffer.from(img.bytes.toString().replace(`"size":${img.layers[0]!.length}`, `"size":${img.layers[0]!.length + 1}`));
    const sized = await putManifest(m.url, 'local/bad', 'v1', wrongSize, OCI.manifest);
    expect([sized.status, sized.errors?.[0]?.code]).toEqual([400, 'MANIFEST_INVALID']);
    expect((await call(m.url, 'GET', '/v2/local/bad/tags/list')).status).toBe(404);
  });

  it('a manifest over 4 MiB is 413 SIZE_INVALID; one just under is accepted', async () => {
    const img = image('amd64');
    await pushImage(m.url, 'local/big', img);
    const base = JSON.parse(img.bytes.toString()) as Record<string, unknown>;
    const withPad = (n: number) => {
      const shell = Buffer.from(JSON.stringify({ ...base, annotations: { pad: '' } }));
      return Buffer.from(JSON.stringify({ ...base, annotations: { pad: 'x'.repeat(n - shell.length) } }));
    };
    const over = await putManifest(m.url, 'local/big', 'over', withPad(4 * 1024 * 1024 + 1), OCI.manifest);
    expect(over.status).toBe(413);
    expect(over.errors?.[0]?.code).toBe('SIZE_INVALID');
    const under = withPad(4 * 1024 * 1024);
    expect((await putManifest(m.url, 'local/big', 'under', under, OCI.manifest)).status).toBe(201);
    expect((await call(m.url, 'GET', '/v2/local/big/manifests/under')).body.equals(under)).toBe(true);
  });

  it("indexChildren 'all': every child, attestations included, must be present", async () => {
    const amd = image('amd64');
    const arm = image('arm64');
    const att = attestationFor(amd);
    await pushImage(m.url, 'local/multi', amd);
    const idx = index([
      { img: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { img: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { img: att, attests: amd },
    ]);
    const r = await putManifest(m.url, 'local/multi', 'v1', idx, OCI.index);
    expect(r.status).toBe(400);
    expect(r.errors?.map((e) => [e.code, e.detail?.digest, e.detail?.platform])).toEqual([
      ['MANIFEST_BLOB_UNKNOWN', arm.digest, 'linux/arm64/v8'],
      ['MANIFEST_BLOB_UNKNOWN', att.digest, 'linux/amd64'],
    ]);
    expect(r.errors?.[0]?.message).toContain(`the linux/arm64/v8 manifest ${arm.digest} of this index is not in local/multi`);
    await pushImage(m.url, 'local/multi', arm);
    await pushImage(m.url, 'local/multi', att);
    const ok = await putManifest(m.url, 'local/multi', 'v1', idx, OCI.index);
    expect(ok.status).toBe(201);
    expect((await call(m.url, 'GET', '/v2/local/multi/manifests/v1')).body.equals(idx)).toBe(true);
  });
});

describe('indexChildren as a platform list, with attestations', () => {
  let m: TestMirror;
  beforeAll(async () => {
    m = await mirror({ indexChildren: ['linux/arm64'] });
  });

  it('requires the listed platform (variant-normalised), not its attestation nor other platforms', async () => {
    const amd = image('amd64');
    const arm = image('arm64');
    const armAtt = attestationFor(arm);
    const idx = index([
      { img: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { img: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { img: armAtt, attests: arm },
    ]);
    const refused = await putManifest(m.url, 'local/list', 'v1', idx, OCI.index);
    expect(refused.status).toBe(400);
    expect(refused.errors).toHaveLength(1);
    expect(refused.errors?.[0]?.detail).toMatchObject({ digest: arm.digest, platform: 'linux/arm64/v8' });
    await pushImage(m.url, 'local/list', arm);
    expect((await putManifest(m.url, 'local/list', 'v1', idx, OCI.index)).status).toBe(201);

    // The absent platform and the absent attestation get the not-mirrored error.
    const amdPull = await call(m.url, 'GET', `/v2/local/list/manifests/${amd.digest}`);
    expect(amdPull.status).toBe(403);
    expect(amdPull.errors?.[0]?.code).toBe('DENIED');
    expect(amdPull.errors?.[0]?.message).toBe(
      `platform linux/amd64 is not mirrored here (this mirror carries linux/arm64/v8 of local/list:v1); ` +
        `${amd.digest} is the linux/amd64 entry of index local/list:v1, which was pushed without it`,
    );
    expect(amdPull.errors?.[0]?.detail).toEqual({
      platform: 'linux/amd64',
      digest: amd.digest,
      index: 'local/list:v1',
      mirroredPlatforms: ['linux/arm64/v8'],
    });
    const attPull = await call(m.url, 'HEAD', `/v2/local/list/manifests/${armAtt.digest}`);
    expect(attPull.status).toBe(403);
    // A digest no index lists is a plain unknown manifest.
    const unknown = await call(m.url, 'GET', `/v2/local/list/manifests/${sha256(Buffer.from('nothing'))}`);
    expect([unknown.status, unknown.errors?.[0]?.code]).toEqual([404, 'MANIFEST_UNKNOWN']);
  });

  it('the pushed platform pulls normally, its blobs too', async () => {
    const arm = image('arm64');
    await pushImage(m.url, 'local/list2', arm, 'arm');
    const got = await call(m.url, 'GET', `/v2/local/list2/manifests/arm`);
    expect(got.body.equals(arm.bytes)).toBe(true);
    const layer = await call(m.url, 'GET', `/v2/local/list2/blobs/${sha256(arm.layers[0]!)}`, { headers: { range: 'bytes=10-19' } });
    expect(layer.status).toBe(206);
    expect(layer.body.equals(arm.layers[0]!.subarray(10, 20))).toBe(true);
  });
});

describe("indexChildren 'none' and notMirroredResponse 'not-found'", () => {
  it('accepts a fully sparse index; absent children are 404 MANIFEST_UNKNOWN with the same message', async () => {
    const m = await mirror({ indexChildren: 'none' }, { notMirroredResponse: 'not-found' });
    const amd = image('amd64');
    const idx = index([{ img: amd, platform: { os: 'linux', architecture: 'amd64' } }]);
    expect((await putManifest(m.url, 'local/sparse', 'v1', idx, OCI.index)).status).toBe(201);
    const r = await call(m.url, 'GET', `/v2/local/sparse/manifests/${amd.digest}`);
    expect([r.status, r.errors?.[0]?.code]).toEqual([404, 'MANIFEST_UNKNOWN']);
    expect(r.errors?.[0]?.message).toContain('platform linux/amd64 is not mirrored here (this mirror carries none of its platforms');
  });
});

describe('DELETE', () => {
  it('is 405 UNSUPPORTED unless push.allowDelete', async () => {
    const m = await mirror({});
    const img = image('amd64');
    await pushImage(m.url, 'local/keep', img, 'v1');
    for (const ref of ['v1', img.digest]) {
      const r = await call(m.url, 'DELETE', `/v2/local/keep/manifests/${ref}`);
      expect([r.status, r.errors?.[0]?.code]).toEqual([405, 'UNSUPPORTED']);
    }
    expect((await call(m.url, 'GET', '/v2/local/keep/manifests/v1')).status).toBe(200);
  });

  it('with allowDelete: tags and manifests by digest (202), unknown ones 404, blobs 405, pull-only 403', async () => {
    const m = await mirror({ allowDelete: true, indexChildren: 'none' });
    const img = image('amd64');
    await pushImage(m.url, 'local/del', img, 'v1');
    await putManifest(m.url, 'local/del', 'v2', img.bytes, OCI.manifest);

    expect((await call(m.url, 'DELETE', '/v2/local/del/manifests/v1', { token: PULL_TOKEN })).status).toBe(403);
    expect((await call(m.url, 'DELETE', '/v2/local/del/manifests/v1')).status).toBe(202);
    expect((await call(m.url, 'GET', '/v2/local/del/manifests/v1')).status).toBe(404);
    expect((await call(m.url, 'GET', '/v2/local/del/manifests/v2')).status).toBe(200);
    expect((await call(m.url, 'DELETE', '/v2/local/del/manifests/v1')).errors?.[0]?.code).toBe('MANIFEST_UNKNOWN');

    const blob = await call(m.url, 'DELETE', `/v2/local/del/blobs/${sha256(img.config)}`);
    expect([blob.status, blob.errors?.[0]?.code]).toEqual([405, 'UNSUPPORTED']);

    expect((await call(m.url, 'DELETE', `/v2/local/del/manifests/${img.digest}`)).status).toBe(202);
    const gone = await call(m.url, 'GET', `/v2/local/del/manifests/${img.digest}`);
    expect([gone.status, gone.errors?.[0]?.code]).toEqual([404, 'MANIFEST_UNKNOWN']);
    expect((await call(m.url, 'GET', '/v2/local/del/manifests/v2')).status).toBe(404);
    expect((await call(m.url, 'DELETE', `/v2/local/del/manifests/${img.digest}`)).status).toBe(404);
    expect((await call(m.url, 'DELETE', '/v2/local/del/manifests/sha256:abc')).errors?.[0]?.code).toBe('DIGEST_INVALID');

    // Deleting a child of a pushed index leaves the index sparse: its platform is then not mirrored.
    const arm = image('arm64');
    await pushImage(m.url, 'local/del', arm);
    await putManifest(m.url, 'local/del', 'multi', index([{ img: arm, platform: { os: 'linux', architecture: 'arm64' } }]), OCI.index);
    expect((await call(m.url, 'DELETE', `/v2/local/del/manifests/${arm.digest}`)).status).toBe(202);
    const absent = await call(m.url, 'GET', `/v2/local/del/manifests/${arm.digest}`);
    expect(absent.status).toBe(403);
    expect(absent.errors?.[0]?.message).toContain('platform linux/arm64 is not mirrored here');
  });
});
