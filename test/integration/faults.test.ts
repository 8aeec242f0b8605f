// Upstream faults, with the in-process fake upstream: bodies cut off mid-blob, wrong bytes for a
// digest, 5xx and 429, an upstream that is down (stale-if-error, offline mode), concurrent requests
// for one cold blob or tag (one upstream fetch, streamed), clients that go away mid-download, and an
// upstream that stalls mid-body. Whatever goes wrong, a client never receives a complete body that
// does not match its digest, and nothing unverified reaches the store.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { get, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MirrorConfigInput } from '../../src/config/schema.js';
import { BlobWriter } from '../../src/store/blob-store.js';
import { useFixture } from '../support/fixture.js';
import { MANIFEST_ACCEPT, MEDIA_TYPES, sha256 } from '../support/images.js';
import { settled, type TestMirror } from '../support/mirror.js';

const OCI_CODES = [
  'BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN', 'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED', 'TOOMANYREQUESTS',
];

const fx = useFixture({ fake: true });
afterEach(() => fx.fake.reset());

async function mirrorFor(config: Partial<MirrorConfigInput> = {}): Promise<TestMirror> {
  return fx.startMirror({ upstreams: [{ url: fx.fake.url }], ...config });
}

interface Blob {
  digest: string;
  bytes: Buffer;
}

interface Image {
  repo: string;
  tag: string;
  digest: string;
  bytes: Buffer;
  config: Blob;
  layers: Blob[];
}

/** A linux/amd64 image manifest with the given layers (raw bytes: the mirror does not unpack), tagged `tag`. */
function addImage(repo: string, tag: string, layerBytes: Buffer[]): Image {
  const layers = layerBytes.map((bytes) => ({ digest: fx.fake.addBlob(repo, bytes), bytes }));
  const configBytes = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } }),
  );
  const config = { digest: fx.fake.addBlob(repo, configBytes), bytes: configBytes };
  const t = MEDIA_TYPES.oci;
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: t.manifest,
      config: { mediaType: t.config, digest: config.digest, size: configBytes.length },
      layers: layers.map((l) => ({ mediaType: t.layer, digest: l.digest, size: l.bytes.length })),
    }),
  );
  const digest = fx.fake.addManifest(repo, tag, bytes, t.manifest);
  return { repo, tag, digest, bytes, config, layers };
}

interface Got {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The whole declared body arrived and the response ended normally. */
  complete: boolean;
  /** performance.now() when the first body byte arrived (undefined if none came). */
  firstByteAt?: number;
  /** ms from the request to the end (or breakdown) of the response. */
  totalMs: number;
  /** A connection error before any response. */
  error?: string;
}

/** GET over its own connection, reporting what arrived before the body ended or broke. */
function rawGet(url: string, opts: { headers?: Record<string, string>; abortAfterBytes?: number } = {}): Promise<Got> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = get(url, { agent: false, headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      let received = 0;
      let firstByteAt: number | undefined;
      res.on('data', (c: Buffer) => {
        firstByteAt ??= performance.now();
        chunks.push(c);
        received += c.length;
        if (opts.abortAfterBytes !== undefined && received >= opts.abortAfterBytes) req.destroy();
      });
      res.on('error', () => {}); // 'aborted' when the server cuts the body short; 'close' reports it
      res.on('close', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          complete: res.complete,
          firstByteAt,
          totalMs: performance.now() - started,
        }),
      );
    });
    req.on('error', (e) => resolve({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, totalMs: performance.now() - started, error: e.message }));
  });
}

const blobUrl = (m: TestMirror, repo: string, digest: string): string => `${m.url}/v2/${repo}/blobs/${digest}`;
const manifestUrl = (m: TestMirror, repo: string, ref: string): string => `${m.url}/v2/${repo}/manifests/${ref}`;

async function getManifest(m: TestMirror, repo: string, ref: string): Promise<{ status: number; headers: Headers; bytes: Buffer }> {
  const res = await fetch(manifestUrl(m, repo, ref), { headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

async function errorOf(res: { bytes: Buffer }): Promise<{ code: string; message: string }> {
  const body = JSON.parse(res.bytes.toString()) as { errors: Array<{ code: string; message: string }> };
  expect(body.errors).toHaveLength(1);
  expect(OCI_CODES).toContain(body.errors[0]!.code);
  return body.errors[0]!;
}

function storedPath(m: TestMirror, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(m.dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

/** Files anywhere under `<dataDir>/tmp` (the store may keep a per-process subdirectory there). */
async function tmpFiles(m: TestMirror): Promise<string[]> {
  const entries = await readdir(join(m.dataDir, 'tmp'), { recursive: true, withFileTypes: true });
  return entries.filter((e) => !e.isDirectory()).map((e) => join(e.parentPath, e.name));
}

/**
 * The client did not get a complete body: either an error status, or a 200 whose body stops short
 * of Content-Length (headers go out before the blob can be verified).
 */
function expectNoCompleteBody(got: Got, blob: Blob): void {
  if (got.status === 200) {
    expect(got.complete).toBe(false);
    expect(got.body.length).toBeLessThan(blob.bytes.length);
  } else {
    expect(got.status).toBe(502);
  }
}

const logged = (m: TestMirror, level: string, pattern: RegExp): string[] =>
  m.logs.filter((l) => (JSON.parse(l) as { level: string }).level === level && pattern.test(l));

describe('a blob cut off mid-body', () => {
  it('is resumed with a Range request; the client gets the whole blob', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/cut-once', 'v1', [randomBytes(256 * 1024)]);
    expect((await getManifest(m, img.repo, img.tag)).status).toBe(200);
    const layer = img.layers[0]!;
    fx.fake.truncateAt(layer.digest, 100_000, 1);
    // In small chunks, so the mirror has consumed (nearly) all 100 000 bytes when the cut comes: a
    // stream that errors drops what it had buffered but not yet handed on, and the mirror resumes
    // from what it actually wrote.
    fx.fake.throttle(layer.digest, 16 * 1024, 5);

    const got = await rawGet(blobUrl(m, img.repo, layer.digest));
    expect(got.status).toBe(200);
    expect(got.complete).toBe(true);
    expect(sha256(got.body)).toBe(layer.digest);
    const upstreamGets = fx.fake.requests.filter((r) => r.method === 'GET' && r.path.endsWith(layer.digest));
    expect(upstreamGets).toHaveLength(2);
    expect(upstreamGets[0]!.headers.range).toBeUndefined();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(upstreamGets[1]!.headers.range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(100_000);
    await settled(m);
    expect(existsSync(storedPath(m, layer.digest))).toBe(true);
  });

  it('cut on every attempt: the client gets a short body, nothing is stored, and a later request succeeds', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/cut-always', 'v1', [randomBytes(256 * 1024)]);
    expect((await getManifest(m, img.repo, img.tag)).status).toBe(200);
    const layer = img.layers[0]!;
    fx.fake.truncateAt(layer.digest, 1000);

    const got = await rawGet(blobUrl(m, img.repo, layer.digest));
    expectNoCompleteBody(got, layer);
    if (got.status === 200) expect(layer.bytes.subarray(0, got.body.length).equals(got.body)).toBe(true); // right so far
    await settled(m);
    expect(fx.fake.count('GET', layer.digest)).toBeGreaterThan(1); // it did try to resume
    expect(existsSync(storedPath(m, layer.digest))).toBe(false);
    expect(await tmpFiles(m)).toEqual([]);
    expect(logged(m, 'warn', /blob download failed; nothing stored/).some((l) => l.includes(layer.digest))).toBe(true);

    fx.fake.clearFaults();
    const again = await rawGet(blobUrl(m, img.repo, layer.digest));
    expect(again.status).toBe(200);
    expect(again.complete).toBe(true);
    expect(sha256(again.body)).toBe(layer.digest);
    await settled(m);
    expect(existsSync(storedPath(m, layer.digest))).toBe(true);
  });
});

describe('a download that has just failed', () => {
  // Between a download failing and leaving the list of downloads in flight, the mirror removes its
  // temp file (async I/O). A request arriving in that window joins the failed download. The window
  // is a few milliseconds; the test widens it by slowing down the temp file's removal.
  it('a client that joins it gets a 502 from upstream (or a fresh download), never a 500', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/late-joiner', 'v1', [randomBytes(256 * 1024)]);
    expect((await getManifest(m, img.repo, img.tag)).status).toBe(200);
    const layer = img.layers[0]!;
    fx.fake.truncateAt(layer.digest, 1000);
    const abort = BlobWriter.prototype.abort;
    BlobWriter.prototype.abort = async function (this: BlobWriter): Promise<void> {
      await new Promise((r) => setTimeout(r, 300));
      return abort.call(this);
    };
    try {
      const first = rawGet(blobUrl(m, img.repo, layer.digest));
      for (let i = 0; i < 500 && m.running.mirror.blobs.inFlight()[0]?.state !== 'failed'; i++) await new Promise((r) => setTimeout(r, 2));
      expect(m.running.mirror.blobs.inFlight()[0]?.state).toBe('failed');
      const late = await rawGet(blobUrl(m, img.repo, layer.digest));
      expect((await first).complete).toBe(false);
      expect(late.complete && late.status === 200 ? sha256(late.body) : layer.digest).toBe(layer.digest);
      if (late.status !== 200) {
        expect(late.status).toBe(502);
        expect((await errorOf({ bytes: late.body })).message).toMatch(/upstream/);
      }
      expect(logged(m, 'error', /internal error/)).toEqual([]);
    } finally {
      BlobWriter.prototype.abort = abort;
      await settled(m);
    }
  });
});

describe('wrong bytes from upstream', () => {
  it('a corrupt blob: the client never gets the complete body, nothing is stored, the log says refused', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/corrupt-blob', 'v1', [randomBytes(64 * 1024)]);
    expect((await getManifest(m, img.repo, img.tag)).status).toBe(200);
    const layer = img.layers[0]!;
    fx.fake.corrupt(layer.digest);

    const got = await rawGet(blobUrl(m, img.repo, layer.digest));
    // Headers went out before verification was possible; the last byte is withheld until the digest
    // checks out, so the client sees a body that stops short and a broken connection.
    expectNoCompleteBody(got, layer);
    await settled(m);
    expect(existsSync(storedPath(m, layer.digest))).toBe(false);
    expect(existsSync(storedPath(m, sha256(Buffer.from(layer.bytes.map((b) => b ^ 0xff)))))).toBe(false);
    expect(await tmpFiles(m)).toEqual([]);
    const lines = logged(m, 'warn', /refused/).filter((l) => l.includes(layer.digest));
    expect(lines.length).toBeGreaterThan(0);

    // A second client after the failure starts a fresh download, which is refused again.
    const second = await rawGet(blobUrl(m, img.repo, layer.digest));
    expectNoCompleteBody(second, layer);
    fx.fake.clearFaults();
    await settled(m);
    const good = await rawGet(blobUrl(m, img.repo, layer.digest));
    expect(good.complete).toBe(true);
    expect(sha256(good.body)).toBe(layer.digest);
  });

  it('a manifest whose bytes do not match the requested digest: 502 with a clear message, nothing stored', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/corrupt-manifest', 'v1', [randomBytes(1024)]);
    fx.fake.corrupt(img.digest);

    const byDigest = await getManifest(m, img.repo, img.digest);
    expect(byDigest.status).toBe(502);
    const e = await errorOf(byDigest);
    expect(e.message).toContain(img.digest);
    expect(e.message).toMatch(/upstream sent bytes whose digest is sha256:[0-9a-f]{64}; refused/);

    // By tag there is no requested digest, but upstream's Docker-Content-Digest does not match either.
    const byTag = await getManifest(m, img.repo, img.tag);
    expect(byTag.status).toBe(502);
    expect((await errorOf(byTag)).message).toMatch(/Docker-Content-Digest .* does not match the bytes/);

    const corrupted = sha256(Buffer.from(img.bytes.map((b) => b ^ 0xff)));
    expect(existsSync(storedPath(m, img.digest))).toBe(false);
    expect(existsSync(storedPath(m, corrupted))).toBe(false);
    expect(await tmpFiles(m)).toEqual([]);

    fx.fake.clearFaults();
    const good = await getManifest(m, img.repo, img.digest);
    expect(good.status).toBe(200);
    expect(good.bytes.equals(img.bytes)).toBe(true);
  });
});

describe('manifests by digest', () => {
  // The distribution spec's URL is /v2/<name>/manifests/<digest> with the digest as is
  // (`sha256:…`); containerd, skopeo and distribution's own proxy send it that way, and a server need
  // not treat `%3A` as `:` (`:` is a reserved character, so the two are different URIs). The fake
  // upstream, like any server that does not decode reserved characters, answers 404 to `sha256%3A…`
  // (regression test: the upstream client used to percent-encode the reference).
  it('asks upstream for a manifest by digest with the colon as is, not percent-encoded', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/by-digest', 'v1', [randomBytes(1024)]);
    const res = await getManifest(m, img.repo, img.digest);
    expect(fx.fake.requests.map((r) => `${r.method} ${r.url}`)).toContain(`GET /v2/${img.repo}/manifests/${img.digest}`);
    expect(res.status).toBe(200);
    expect(res.bytes.equals(img.bytes)).toBe(true);
  });
});

describe('upstream error statuses', () => {
  it('503 twice, then OK: the mirror retries and succeeds', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/flaky', 'v1', [randomBytes(1024)]);
    fx.fake.failWith(`/v2/${img.repo}/manifests/v1`, 503, 2);
    const res = await getManifest(m, img.repo, 'v1');
    expect(res.status).toBe(200);
    expect(res.bytes.equals(img.bytes)).toBe(true);
    expect(fx.fake.count('GET', `/v2/${img.repo}/manifests/v1`)).toBe(3);

    // Same for a blob.
    const layer = img.layers[0]!;
    fx.fake.failWith(layer.digest, 503, 2);
    const blob = await rawGet(blobUrl(m, img.repo, layer.digest));
    expect(blob.status).toBe(200);
    expect(sha256(blob.body)).toBe(layer.digest);
    expect(fx.fake.count('GET', layer.digest)).toBe(3);
  });

  it('a persistent 500: 502 with an OCI error that says upstream failed', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/broken', 'v1', [randomBytes(1024)]);
    fx.fake.failWith(`/v2/${img.repo}/manifests/v1`, 500);
    const res = await getManifest(m, img.repo, 'v1');
    expect(res.status).toBe(502);
    expect(res.headers.get('content-type')).toBe('application/json');
    const e = await errorOf(res);
    expect(e.code).toBe('MANIFEST_UNKNOWN');
    expect(e.message).toMatch(/upstream error 500/);
    expect(fx.fake.count('GET', `/v2/${img.repo}/manifests/v1`)).toBe(3); // upstream.attempts (default 3)
    expect(existsSync(storedPath(m, img.digest))).toBe(false);
  });

  it('429 with Retry-After: 429 TOOMANYREQUESTS with Retry-After, not retried', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/limited', 'v1', [randomBytes(1024)]);
    fx.fake.failWith(`/v2/${img.repo}/manifests/v1`, 429, { headers: { 'Retry-After': '17' } });
    const res = await getManifest(m, img.repo, 'v1');
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('17');
    const e = await errorOf(res);
    expect(e.code).toBe('TOOMANYREQUESTS');
    expect(e.message).toMatch(/rate limit/);
    expect(fx.fake.count('GET', `/v2/${img.repo}/manifests/v1`)).toBe(1);
  });
});

describe('read-ahead', () => {
  it('that fails costs the client nothing: it is logged, nothing is kept, and the blob is fetched when asked for', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/ahead-fails', 'v1', [randomBytes(64 * 1024), randomBytes(64 * 1024)]);
    const [first, next] = img.layers as [Blob, Blob];
    expect((await getManifest(m, img.repo, 'v1')).status).toBe(200);
    fx.fake.failWith(next.digest, 500); // every attempt the read-ahead makes
    const got = await rawGet(blobUrl(m, img.repo, first.digest));
    expect([got.status, got.complete, sha256(got.body)]).toEqual([200, true, first.digest]);
    await settled(m);
    expect(fx.fake.count('GET', next.digest)).toBeGreaterThan(0);
    expect(logged(m, 'warn', /blob download failed; nothing stored/).some((l) => l.includes(next.digest))).toBe(true);
    expect(m.running.mirror.catalogue.getBlob(next.digest)).toBeUndefined();
    expect(await tmpFiles(m)).toEqual([]);
    expect(existsSync(storedPath(m, next.digest))).toBe(false);

    fx.fake.clearFaults();
    const later = await rawGet(blobUrl(m, img.repo, next.digest));
    expect([later.status, later.complete, sha256(later.body)]).toEqual([200, true, next.digest]);
  });

  it('runs at most two at once across clients', async () => {
    const m = await mirrorFor();
    const imgs = ['a', 'b', 'c'].map((n) => addImage(`faults/ahead-${n}`, 'v1', [randomBytes(8 * 1024), randomBytes(8 * 1024)]));
    for (const img of imgs) expect((await getManifest(m, img.repo, 'v1')).status).toBe(200);
    for (const img of imgs) fx.fake.delay(img.layers[1]!.digest, 400);
    for (const img of imgs) expect((await rawGet(blobUrl(m, img.repo, img.layers[0]!.digest))).status).toBe(200);
    await new Promise((r) => setTimeout(r, 50)); // the read-aheads start once their blob is recorded
    const ahead = m.running.mirror.blobs.inFlight().map((d) => d.digest.value);
    expect(ahead.sort()).toEqual([imgs[0]!.layers[1]!.digest, imgs[1]!.layers[1]!.digest].sort());
    await settled(m);
    expect(fx.fake.count('GET', imgs[2]!.layers[1]!.digest)).toBe(0);
  });
});

describe('upstream down', () => {
  it('serves what it holds (stale-if-error, with a warning), 502 for the rest; offline mode asks upstream nothing', async () => {
    // No read-ahead: it would fetch `notFetched` while upstream is still up.
    const m = await mirrorFor({ tags: { ttlSeconds: 0 }, blobs: { readAhead: false } });
    const img = addImage('faults/down', 'v1', [randomBytes(4096), randomBytes(4096)]);
    const other = addImage('faults/down', 'other', [randomBytes(1024)]);
    expect((await getManifest(m, img.repo, 'v1')).status).toBe(200);
    const layer = img.layers[0]!;
    const notFetched = img.layers[1]!; // referenced by a stored manifest, but never pulled
    expect(sha256((await rawGet(blobUrl(m, img.repo, layer.digest))).body)).toBe(layer.digest);
    await settled(m);

    await fx.fake.down();
    try {
      const tag = await getManifest(m, img.repo, 'v1'); // ttl 0: must revalidate, upstream refuses
      expect(tag.status).toBe(200);
      expect(tag.bytes.equals(img.bytes)).toBe(true);
      expect(tag.headers.get('docker-content-digest')).toBe(img.digest);
      const warnings = logged(m, 'warn', /stale-if-error/);
      expect(warnings.length).toBeGreaterThan(0);
      expect(warnings.join('\n')).toContain(`${img.repo}:v1`);

      const byDigest = await getManifest(m, img.repo, img.digest);
      expect(byDigest.status).toBe(200);
      const blob = await rawGet(blobUrl(m, img.repo, layer.digest));
      expect(blob.status).toBe(200);
      expect(sha256(blob.body)).toBe(layer.digest);
      const config = await rawGet(blobUrl(m, img.repo, img.config.digest));
      expect(config.body.equals(img.config.bytes)).toBe(true);

      const newTag = await getManifest(m, other.repo, 'other');
      expect(newTag.status).toBe(502);
      expect((await errorOf(newTag)).message).toMatch(/unreachable/);
      const newBlob = await rawGet(blobUrl(m, img.repo, notFetched.digest));
      expect(newBlob.status).toBe(502);
      expect((await errorOf({ bytes: newBlob.body })).message).toMatch(/unreachable/);
    } finally {
      await fx.fake.up();
    }

    // Offline, on the same store, with upstream up again: stored content only, zero upstream requests.
    await m.stop();
    const offline = await mirrorFor({ dataDir: m.dataDir, offline: true, tags: { ttlSeconds: 0 } });
    fx.fake.reset();
    const tag = await getManifest(offline, img.repo, 'v1');
    expect(tag.status).toBe(200);
    expect(tag.bytes.equals(img.bytes)).toBe(true);
    expect(sha256((await rawGet(blobUrl(offline, img.repo, layer.digest))).body)).toBe(layer.digest);
    const missing = await getManifest(offline, other.repo, 'other');
    expect(missing.status).toBe(404);
    expect((await errorOf(missing)).message).toContain('offline');
    const missingBlob = await rawGet(blobUrl(offline, img.repo, notFetched.digest));
    expect(missingBlob.status).toBe(404);
    expect(fx.fake.requests).toEqual([]);
  });
});

describe('concurrency', () => {
  it('20 concurrent GETs of one cold 8 MiB blob: one upstream GET, streamed, all bodies correct', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/herd', 'v1', [randomBytes(8 * 1024 * 1024)]);
    expect((await getManifest(m, img.repo, img.tag)).status).toBe(200);
    const layer = img.layers[0]!;
    fx.fake.throttle(layer.digest, 128 * 1024, 15); // 64 chunks, ~1 s

    const pending = Array.from({ length: 20 }, () => rawGet(blobUrl(m, img.repo, layer.digest)));
    // When the mirror has the last byte from upstream and has verified and committed the blob.
    let committedAt = Infinity;
    for (let i = 0; i < 200 && m.running.mirror.blobs.inFlight().length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const download = m.running.mirror.blobs.inFlight()[0];
    expect(download).toBeDefined();
    void download!.finished.then(() => (committedAt = performance.now()));
    const results = await Promise.all(pending);
    // Clients get the last byte once the digest verifies; the flush and rename may finish after.
    await download!.finished;
    expect(fx.fake.count('GET', layer.digest)).toBe(1);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.complete).toBe(true);
      expect(sha256(r.body)).toBe(layer.digest);
    }
    // Streaming, not store-then-forward: the first byte reached a client well before the last byte
    // came from upstream (the blob is verified and committed right after that).
    const firstByteAt = Math.min(...results.map((r) => r.firstByteAt ?? Infinity));
    expect(committedAt).toBeLessThan(Infinity);
    expect(committedAt - firstByteAt).toBeGreaterThan(300);
    expect(Math.min(...results.map((r) => r.totalMs))).toBeGreaterThan(700); // the throttle did hold upstream back
    await settled(m);
    expect(existsSync(storedPath(m, layer.digest))).toBe(true);
  });

  it('10 concurrent GETs of one cold tag: one upstream GET', async () => {
    const m = await mirrorFor();
    const index = fx.fake.addImage('faults/herd-tag', 'v1');
    fx.fake.delay(`/v2/faults/herd-tag/manifests/v1`, 300, 1);
    const results = await Promise.all(Array.from({ length: 10 }, () => getManifest(m, 'faults/herd-tag', 'v1')));
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.bytes.equals(index.bytes)).toBe(true);
      expect(r.headers.get('docker-content-digest')).toBe(index.digest);
    }
    expect(fx.fake.count('GET', '/v2/faults/herd-tag/manifests/v1')).toBe(1);
    expect(fx.fake.count('HEAD', '/v2/faults/herd-tag/manifests/v1')).toBe(0);
  });

  it('a client that disconnects mid-download does not stop it for the others, and the blob is committed', async () => {
    const m = await mirrorFor();
    const img = addImage('faults/quitter', 'v1', [randomBytes(4 * 1024 * 1024), randomBytes(4 * 1024 * 1024)]);
    expect((await getManifest(m, img.repo, img.tag)).status).toBe(200);
    const [shared, alone] = img.layers as [Blob, Blob];
    fx.fake.throttle(shared.digest, 128 * 1024, 15);
    fx.fake.throttle(alone.digest, 128 * 1024, 15);

    // Two clients; one hangs up after 256 KiB.
    const [quitter, stayer] = await Promise.all([
      rawGet(blobUrl(m, img.repo, shared.digest), { abortAfterBytes: 256 * 1024 }),
      rawGet(blobUrl(m, img.repo, shared.digest)),
    ]);
    expect(quitter.complete).toBe(false);
    expect(stayer.complete).toBe(true);
    expect(sha256(stayer.body)).toBe(shared.digest);

    // The only client hangs up: the download still finishes into the store.
    const sole = await rawGet(blobUrl(m, img.repo, alone.digest), { abortAfterBytes: 256 * 1024 });
    expect(sole.complete).toBe(false);
    await settled(m);
    expect(existsSync(storedPath(m, shared.digest))).toBe(true);
    expect(existsSync(storedPath(m, alone.digest))).toBe(true);
    expect(fx.fake.count('GET', shared.digest)).toBe(1);
    expect(fx.fake.count('GET', alone.digest)).toBe(1);
    const fromStore = await rawGet(blobUrl(m, img.repo, alone.digest));
    expect(sha256(fromStore.body)).toBe(alone.digest);
    expect(fx.fake.count('GET', alone.digest)).toBe(1);
  });
});

describe('an upstream that stalls mid-body', () => {
  it('beyond upstream.bodyIdleTimeoutMs: the client gets an error, nothing is stored', async () => {
    const m = await mirrorFor({ upstream: { bodyIdleTimeoutMs: 500 } });
    const img = addImage('faults/stall', 'v1', [randomBytes(64 * 1024)]);
    expect((await getManifest(m, img.repo, img.tag)).status).toBe(200);
    const layer = img.layers[0]!;
    fx.fake.throttle(layer.digest, 1024, 2000); // 1 KiB, then nothing for 2 s

    const got = await rawGet(blobUrl(m, img.repo, layer.digest));
    expectNoCompleteBody(got, layer);
    await settled(m);
    expect(existsSync(storedPath(m, layer.digest))).toBe(false);
    expect(await tmpFiles(m)).toEqual([]);
    expect(logged(m, 'warn', /blob download failed/).some((l) => l.includes(layer.digest))).toBe(true);
  });
});
