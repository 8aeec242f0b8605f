// Hostile and malformed input: bad repository names and digests, Range headers, an oversized
// manifest upstream, write methods. Every answer is a clear 4xx OCI error (never a 5xx), nothing
// hostile reaches the upstream (counting proxy), and the store holds only content-addressed files.
// Requests go out over node:http with the path exactly as written: fetch() would resolve `..`.
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCountingProxy, type CountingProxy } from '../support/counting-proxy.js';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import {
  MANIFEST_ACCEPT,
  MEDIA_TYPES,
  fetchBlob,
  pushBlob,
  pushMultiPlatformImage,
  putManifest,
  sha256,
  type PushedChild,
  type PushedIndex,
} from '../support/images.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';

const SPEC_CODES = [
  'BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN', 'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED', 'TOOMANYREQUESTS',
];
const MiB = 1024 * 1024;

interface Raw {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One request with the path sent byte for byte as given (no normalisation of `..`). */
function raw(base: string, method: string, path: string, headers: Record<string, string> = {}, body?: Buffer): Promise<Raw> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, method, path, headers: { accept: MANIFEST_ACCEPT, ...headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The response is an OCI error document with a spec code and a non-empty message. */
function ociError(r: Raw, what: string): { code: string; message: string } {
  expect(r.headers['content-type'], what).toContain('application/json');
  const body = JSON.parse(r.body.toString('utf8')) as { errors: Array<{ code: string; message: string }> };
  expect(body.errors, what).toHaveLength(1);
  const e = body.errors[0]!;
  expect(SPEC_CODES, what).toContain(e.code);
  expect(e.message.length, what).toBeGreaterThan(0);
  return e;
}

/** Every file under the store, relative to it. */
async function storeFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(relative(dir, p));
    }
  };
  await walk(dir);
  return out;
}

const hex = (n: number): string => randomBytes(n).toString('hex');

describe('hostile input', () => {
  let registry: RegistryHandle;
  let proxy: CountingProxy;
  let mirror: TestMirror;
  let image: PushedIndex;
  let amd64: PushedChild;
  const base = (): string => mirror.url;

  beforeAll(async () => {
    registry = await startRegistry();
    image = await pushMultiPlatformImage(registry.url, 'hostile/app', '1.0', {
      platforms: ['linux/amd64', 'linux/arm64'],
      layersPerImage: 2,
      rawLayers: true,
      layerSize: 20_000,
    });
    amd64 = image.children.find((c) => c.platform?.architecture === 'amd64')!;
    proxy = await startCountingProxy(registry.url);
    mirror = await startTestMirror({ upstreams: [{ url: proxy.url }] });
  });

  afterAll(async () => {
    await mirror?.stop({ removeData: true });
    await proxy?.stop();
    await registry?.stop();
  });

  describe('repository names', () => {
    const NAMES: Array<[string, string]> = [
      ['raw ..', 'library/../../../etc/passwd'],
      ['raw .. inside a valid-looking name', 'other/../hostile/app'],
      ['%2e%2e', 'library/%2e%2e/%2e%2e/etc'],
      ['%2E%2E inside a valid-looking name', 'other/%2E%2E/hostile/app'],
      ['mixed .%2e', 'other/.%2e/hostile/app'],
      ['%2F', 'library%2Fhostile'],
      ['..%2F', 'hostile/..%2F..%2Fetc'],
      ['absolute %2F', '%2Fetc%2Fpasswd'],
      ['empty component', '/etc/passwd'],
      ['upper case', 'Hostile/App'],
      ['NUL byte', 'hostile/app%00'],
      ['backslash', 'hostile%5C..%5Capp'],
      ['300 characters', `hostile/${'a'.repeat(292)}`],
    ];

    it.each(NAMES)('%s: clear 4xx for manifests, blobs and tags, nothing upstream', async (_label, name) => {
      proxy.reset();
      const paths = [
        `/v2/${name}/manifests/1.0`,
        `/v2/${name}/manifests/${image.digest}`,
        `/v2/${name}/blobs/${amd64.layers[0]!.digest}`,
        `/v2/${name}/tags/list`,
      ];
      for (const path of paths) {
        for (const method of ['GET', 'HEAD']) {
          const r = await raw(base(), method, path);
          const what = `${method} ${path} -> ${r.status} ${r.body.toString().slice(0, 200)}`;
          expect(r.status, what).toBeGreaterThanOrEqual(400);
          expect(r.status, what).toBeLessThan(500);
          if (method === 'GET') expect(['NAME_INVALID', 'NAME_UNKNOWN'], what).toContain(ociError(r, what).code);
        }
      }
      expect(proxy.lines()).toEqual([]);
    });

    it('answers invalid tags with a 4xx without asking upstream', async () => {
      proxy.reset();
      for (const tag of ['-bad', '.hidden', `t${'x'.repeat(200)}`, 'a%2Fb', 'tag%00']) {
        const r = await raw(base(), 'GET', `/v2/hostile/app/manifests/${tag}`);
        const what = `${tag} -> ${r.status} ${r.body.toString().slice(0, 200)}`;
        expect(r.status, what).toBeGreaterThanOrEqual(400);
        expect(r.status, what).toBeLessThan(500);
        ociError(r, what);
      }
      expect(proxy.lines()).toEqual([]);
    });
  });

  describe('digests', () => {
    const DIGESTS: Array<[string, string, RegExp]> = [
      ['path traversal', 'sha256:../../x', /digest/],
      ['encoded traversal', 'sha256:..%2F..%2Fx', /digest/],
      ['short hex', 'sha256:abc123', /64 lower-case hex/],
      ['upper-case hex', `sha256:${hex(32).toUpperCase()}`, /64 lower-case hex/],
      ['sha384', `sha384:${hex(48)}`, /sha384.*not supported/],
      ['md5', `md5:${hex(16)}`, /md5.*not supported/],
      ['sha512 of the wrong length', `sha512:${hex(32)}`, /128 lower-case hex/],
      ['no hex', 'sha256:', /digest/],
    ];

    it.each(DIGESTS)('%s: 400 DIGEST_INVALID for manifests and blobs, nothing upstream', async (_label, digest, message) => {
      proxy.reset();
      for (const kind of ['manifests', 'blobs']) {
        const path = `/v2/hostile/app/${kind}/${digest}`;
        const r = await raw(base(), 'GET', path);
        const what = `${path} -> ${r.status} ${r.body.toString().slice(0, 300)}`;
        expect(r.status, what).toBe(400);
        const e = ociError(r, what);
        expect(e.code, what).toBe('DIGEST_INVALID');
        expect(e.message, what).toMatch(message);
        expect((await raw(base(), 'HEAD', path)).status, `HEAD ${what}`).toBe(400);
      }
      expect(proxy.lines()).toEqual([]);
    });
  });

  describe('Range', () => {
    let blob: Buffer;
    let digest: string;
    const blobPath = (): string => `/v2/hostile/app/blobs/${digest}`;

    beforeAll(async () => {
      expect((await raw(base(), 'GET', `/v2/hostile/app/manifests/1.0`)).status).toBe(200);
      expect((await raw(base(), 'GET', `/v2/hostile/app/manifests/${amd64.digest}`)).status).toBe(200);
      digest = amd64.layers[0]!.digest;
      blob = await fetchBlob(registry.url, 'hostile/app', digest);
      expect(blob.length).toBe(20_000);
    });

    it('a range on a blob not yet stored is answered from the download in flight', async () => {
      const second = amd64.layers[1]!.digest;
      const whole = await fetchBlob(registry.url, 'hostile/app', second);
      const r = await raw(base(), 'GET', `/v2/hostile/app/blobs/${second}`, { range: 'bytes=100-199' });
      expect(r.status).toBe(206);
      expect(r.headers['content-range']).toBe(`bytes 100-199/${whole.length}`);
      expect(r.body.equals(whole.subarray(100, 200))).toBe(true);
      // Once stored, the whole blob is right.
      const all = await raw(base(), 'GET', `/v2/hostile/app/blobs/${second}`);
      expect(all.status).toBe(200);
      expect(sha256(all.body)).toBe(second);
    });

    it('bytes=0-9 → 206 with Content-Range and exactly those bytes', async () => {
      await raw(base(), 'GET', blobPath());
      const r = await raw(base(), 'GET', blobPath(), { range: 'bytes=0-9' });
      expect(r.status).toBe(206);
      expect(r.headers['content-range']).toBe(`bytes 0-9/${blob.length}`);
      expect(r.headers['content-length']).toBe('10');
      expect(r.body.equals(blob.subarray(0, 10))).toBe(true);
    });

    it('bytes=-5 → the last five bytes', async () => {
      const r = await raw(base(), 'GET', blobPath(), { range: 'bytes=-5' });
      expect(r.status).toBe(206);
      expect(r.headers['content-range']).toBe(`bytes ${blob.length - 5}-${blob.length - 1}/${blob.length}`);
      expect(r.body.equals(blob.subarray(blob.length - 5))).toBe(true);
    });

    it('bytes=N- → the rest from N', async () => {
      const r = await raw(base(), 'GET', blobPath(), { range: 'bytes=19990-' });
      expect(r.status).toBe(206);
      expect(r.headers['content-range']).toBe(`bytes 19990-19999/${blob.length}`);
      expect(r.body.equals(blob.subarray(19990))).toBe(true);
    });

    it('bytes=999999999- → 416 with Content-Range: bytes */size', async () => {
      const r = await raw(base(), 'GET', blobPath(), { range: 'bytes=999999999-' });
      expect(r.status).toBe(416);
      expect(r.headers['content-range']).toBe(`bytes */${blob.length}`);
      ociError(r, '416');
    });

    it('a garbage Range is ignored: 200 with the whole blob', async () => {
      for (const range of ['bytes=abc', 'items=0-9', 'bytes=5-2', 'bytes=0-1,5-6']) {
        const r = await raw(base(), 'GET', blobPath(), { range });
        expect(r.status, range).toBe(200);
        expect(r.headers['content-length'], range).toBe(String(blob.length));
        expect(r.body.equals(blob), range).toBe(true);
      }
    });
  });

  describe('manifest size', () => {
    /** A valid image manifest of exactly `size` bytes, padded with an annotation. */
    function manifestOfSize(size: number, config: { digest: string; size: number }): Buffer {
      const doc = {
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.oci.manifest,
        config: { mediaType: MEDIA_TYPES.oci.config, ...config },
        layers: [] as unknown[],
        annotations: { padding: '' },
      };
      doc.annotations.padding = 'x'.repeat(size - Buffer.byteLength(JSON.stringify(doc)));
      const bytes = Buffer.from(JSON.stringify(doc));
      expect(bytes.length).toBe(size);
      return bytes;
    }

    it('serves a manifest just under 4 MiB byte-exact', async () => {
      const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] } }));
      const configDigest = await pushBlob(registry.url, 'hostile/big', config);
      const bytes = manifestOfSize(4 * MiB - 4096, { digest: configDigest, size: config.length });
      const digest = await putManifest(registry.url, 'hostile/big', 'under', bytes, MEDIA_TYPES.oci.manifest);
      const r = await raw(base(), 'GET', '/v2/hostile/big/manifests/under');
      expect(r.status, r.body.toString().slice(0, 300)).toBe(200);
      expect(r.headers['docker-content-digest']).toBe(digest);
      expect(r.body.equals(bytes)).toBe(true);
    });

    describe('over 4 MiB upstream', () => {
      let fake: FakeUpstream;
      let m: TestMirror;
      let bytes: Buffer;
      let digest: string;

      beforeAll(async () => {
        // distribution 2.8 refuses to store a manifest over 4 MiB, so an in-process fake serves it.
        fake = await startFakeUpstream();
        const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] } }));
        const configDigest = fake.addBlob('big/app', config);
        bytes = manifestOfSize(4 * MiB + 4096, { digest: configDigest, size: config.length });
        digest = fake.addManifest('big/app', 'huge', bytes, MEDIA_TYPES.oci.manifest);
        m = await startTestMirror({ upstreams: [{ url: fake.url }], upstream: { attempts: 1 } });
      });
      afterAll(async () => {
        await m?.stop({ removeData: true });
        await fake?.stop();
      });

      it('a clear 4xx OCI error naming the limit, and nothing stored', async () => {
        const path = '/v2/big/app/manifests/huge';
        for (let attempt = 1; attempt <= 2; attempt++) {
          const before = fake.count('GET', '/manifests/huge');
          const r = await raw(m.url, 'GET', path);
          const what = `${path} -> ${r.status} ${r.body.toString().slice(0, 300)}`;
          expect(r.status, what).toBeGreaterThanOrEqual(400);
          expect(r.status, what).toBeLessThan(500);
          expect(ociError(r, what).message, what).toMatch(/4194304|4 ?MiB/);
          // Nothing was stored: the next request asks upstream again.
          expect(fake.count('GET', '/manifests/huge'), what).toBe(before + 1);
        }
        const head = await raw(m.url, 'HEAD', path);
        expect(head.status).toBeGreaterThanOrEqual(400);
        expect(head.status).toBeLessThan(500);
        const files = await storeFiles(m.dataDir);
        expect(files.filter((f) => f.includes(digest.slice(7)))).toEqual([]);
      });
    });
  });

  describe('methods and the base endpoint', () => {
    it('PUT, DELETE, POST and PATCH get 405 UNSUPPORTED as JSON and never reach upstream', async () => {
      proxy.reset();
      const layer = amd64.layers[0]!.digest;
      const cases: Array<[string, string]> = [
        ['PUT', '/v2/hostile/app/manifests/1.0'],
        ['DELETE', '/v2/hostile/app/manifests/1.0'],
        ['DELETE', `/v2/hostile/app/manifests/${image.digest}`],
        ['POST', '/v2/hostile/app/blobs/uploads/'],
        ['PATCH', '/v2/hostile/app/blobs/uploads/some-session'],
        ['PUT', `/v2/hostile/app/blobs/uploads/some-session?digest=${layer}`],
        ['DELETE', `/v2/hostile/app/blobs/${layer}`],
      ];
      for (const [method, path] of cases) {
        const body = method === 'PUT' || method === 'PATCH' ? Buffer.from(image.bytes) : undefined;
        const r = await raw(base(), method, path, body ? { 'content-type': MEDIA_TYPES.oci.index } : {}, body);
        const what = `${method} ${path} -> ${r.status} ${r.body.toString().slice(0, 200)}`;
        expect(r.status, what).toBe(405);
        expect(ociError(r, what).code, what).toBe('UNSUPPORTED');
      }
      expect(proxy.lines()).toEqual([]);
    });

    it('/v2/ answers 200 with Docker-Distribution-API-Version: registry/2.0', async () => {
      for (const path of ['/v2/', '/v2']) {
        for (const method of ['GET', 'HEAD']) {
          const r = await raw(base(), method, path);
          expect(r.status, `${method} ${path}`).toBe(200);
          expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0');
        }
      }
    });

    it('bad tag-list parameters get 400, not a method error', async () => {
      for (const q of ['n=abc', 'n=-1', 'last=%00']) {
        const r = await raw(base(), 'GET', `/v2/hostile/app/tags/list?${q}`);
        const what = `${q} -> ${r.status} ${r.body.toString().slice(0, 200)}`;
        expect(r.status, what).toBe(400);
        ociError(r, what);
      }
    });
  });

  it('keeps only content-addressed files in its store', async () => {
    const files = await storeFiles(mirror.dataDir);
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      expect(f).toMatch(/^(blobs\/sha256\/[0-9a-f]{2}\/[0-9a-f]{64}|blobs\/sha512\/[0-9a-f]{2}\/[0-9a-f]{128}|mirror\.db(-wal|-shm)?)$/);
    }
    for (const f of files.filter((x) => x.startsWith('blobs/'))) {
      const h = f.split('/').pop()!;
      expect(f.split('/')[2]).toBe(h.slice(0, 2));
    }
  });
});
