// Reliability: upstream answers a digest with other bytes (same length, Docker-Content-Digest
// unchanged), or with a size that contradicts the manifest. The mirror refuses: nothing is stored,
// and every client gets a clear error (an OCI error, a body cut short, or a closed connection),
// never a complete body that is not the content of the digest it asked for.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { verifyStore } from '../../src/upkeep/verify.js';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { MANIFEST_ACCEPT, MEDIA_TYPES } from '../support/images.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { httpRequest, isCompleteBody, listFiles, OCI_CODES, ociError, report, settled, sha256, storedPath, type Got } from './helpers.js';

let fake: FakeUpstream;
let mirror: TestMirror;
const figures = { cases: 0, faults_injected: 0, responses: 0, refused_with_oci_error: 0, cut_short: 0, closed_before_headers: 0, complete_wrong_bodies: 0, bytes_verified: 0 };
const started = performance.now();
/** Errors nothing handled (an 'error' event without a listener kills a real `serve`). */
const uncaught: string[] = [];
const onUncaught = (e: Error): void => void uncaught.push(`${e.name}: ${e.message} ${e.stack?.split('\n').slice(1, 4).join(' | ')}`);

beforeAll(async () => {
  process.on('uncaughtException', onUncaught);
  fake = await startFakeUpstream();
  mirror = await startTestMirror({ upstreams: [{ url: fake.url }], blobs: { requireReference: false }, log: { level: 'warn' } });
});
afterEach(async () => {
  fake.clearFaults();
  await settled(mirror);
  // Would have crashed a real `serve` process.
  expect(uncaught.splice(0), 'uncaught exceptions in the mirror').toEqual([]);
});
afterAll(async () => {
  process.off('uncaughtException', onUncaught);
  report('wrong-bytes', { ...figures, ms: Math.round(performance.now() - started) });
  await mirror?.stop({ removeData: true });
  await fake?.stop();
});

const blobUrl = (repo: string, d: string): string => `${mirror.url}/v2/${repo}/blobs/${d}`;
const manifestUrl = (repo: string, ref: string): string => `${mirror.url}/v2/${repo}/manifests/${ref}`;

/**
 * A refusal as a client sees it: an OCI error document (502, naming the wrong content), a body
 * cut short of its Content-Length, or a connection closed before the status line. Never complete.
 */
function expectRefused(g: Got, what: string, size: number): void {
  figures.responses++;
  expect(isCompleteBody(g), `${what}: complete body of wrong content (status ${g.status}, ${g.body.length} bytes)`).toBe(false);
  if (g.status === 0) {
    expect(g.body.length).toBe(0);
    expect(g.error).not.toMatch(/timed out/);
    figures.closed_before_headers++;
  } else if (g.status === 200 || g.status === 206) {
    expect(g.complete, `${what}: cut short`).toBe(false);
    expect(g.body.length).toBeLessThan(size);
    figures.cut_short++;
  } else {
    expect(g.status, `${what}: ${g.body.toString().slice(0, 300)}`).toBe(502);
    const e = ociError(g);
    expect(e, `${what}: OCI error body`).toBeDefined();
    expect(OCI_CODES).toContain(e!.code);
    expect(e!.message).toMatch(/refused|wrong|does not match|bytes/i);
    expect(g.body.toString()).not.toMatch(/\n\s+at /); // no stack trace
    figures.refused_with_oci_error++;
  }
}

async function expectNothingStored(digest: string): Promise<void> {
  await settled(mirror);
  expect(existsSync(storedPath(mirror.dataDir, digest)), `${digest} stored`).toBe(false);
  expect(mirror.running.mirror.catalogue.getBlob(digest)).toBeUndefined();
  expect(await listFiles(join(mirror.dataDir, 'tmp'))).toEqual([]);
}

function addImage(repo: string, tag: string, layer: Buffer, opts: { declaredLayerSize?: number } = {}) {
  const layerDigest = fake.addBlob(repo, layer);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layerDigest] } }));
  const configDigest = fake.addBlob(repo, config);
  const t = MEDIA_TYPES.oci;
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: t.manifest,
      config: { mediaType: t.config, digest: configDigest, size: config.length },
      layers: [{ mediaType: t.layer, digest: layerDigest, size: opts.declaredLayerSize ?? layer.length }],
    }),
  );
  const digest = fake.addManifest(repo, tag, bytes, t.manifest);
  return { digest, bytes, configDigest, config, layerDigest, layer };
}

describe('upstream sends wrong bytes for a blob digest', () => {
  it.each([1, 2, 100_000, 1_500_000])('%i-byte blob, corrupt on every GET: refused to every client, nothing stored', { timeout: 30_000 }, async (size) => {
    figures.cases++;
    const repo = 'reliability/wrong';
    const bytes = randomBytes(size);
    const digest = fake.addBlob(repo, bytes);
    fake.corrupt(digest);
    // Three clients at once (one follows with a Range that includes the last byte), then two more later.
    const concurrent = await Promise.all([
      httpRequest(blobUrl(repo, digest)),
      httpRequest(blobUrl(repo, digest)),
      httpRequest(blobUrl(repo, digest), { headers: { range: `bytes=${Math.floor(size / 2)}-` } }),
    ]);
    concurrent.forEach((g, i) => expectRefused(g, `client ${i}`, size));
    await settled(mirror);
    for (let i = 0; i < 2; i++) expectRefused(await httpRequest(blobUrl(repo, digest)), `later client ${i}`, size);
    figures.faults_injected += fake.count('GET', digest);
    await expectNothingStored(digest);
  });

  it('corrupt once: the first client is refused, the next gets the right bytes and they are stored', async () => {
    figures.cases++;
    const repo = 'reliability/wrong-once';
    const bytes = randomBytes(300_000);
    const digest = fake.addBlob(repo, bytes);
    fake.corrupt(digest, 1);
    expectRefused(await httpRequest(blobUrl(repo, digest)), 'first', bytes.length);
    figures.faults_injected++;
    await expectNothingStored(digest);
    const ok = await httpRequest(blobUrl(repo, digest));
    expect(isCompleteBody(ok)).toBe(true);
    expect(sha256(ok.body)).toBe(digest);
    figures.bytes_verified += ok.body.length;
    await settled(mirror);
    expect(existsSync(storedPath(mirror.dataDir, digest))).toBe(true);
  });

  it('a Range follower of a corrupt download never gets a complete 206 of wrong bytes', { timeout: 30_000 }, async () => {
    // A range that stops before the last byte: its bytes can only be vouched for once the whole
    // blob has been verified, so the mirror must not complete such a response from an unverified download.
    figures.cases++;
    const repo = 'reliability/wrong-range';
    const size = 600_000;
    const bytes = randomBytes(size);
    const digest = fake.addBlob(repo, bytes);
    fake.corrupt(digest);
    fake.throttle(digest, 64 * 1024, 5);
    const ranges = ['bytes=0-99', 'bytes=1000-299999', `bytes=0-${size - 2}`];
    const results = await Promise.all([httpRequest(blobUrl(repo, digest)), ...ranges.map((r) => httpRequest(blobUrl(repo, digest), { headers: { range: r } }))]);
    const wrong: string[] = [];
    results.forEach((g, i) => {
      figures.responses++;
      const what = i === 0 ? 'full GET' : ranges[i - 1]!;
      const complete206 = g.status === 206 && g.complete && g.body.length === Number(g.headers['content-length']);
      if (complete206) {
        const m = /^bytes (\d+)-(\d+)\/\d+$/.exec(String(g.headers['content-range']));
        if (!m || !bytes.subarray(Number(m[1]), Number(m[2]) + 1).equals(g.body)) {
          figures.complete_wrong_bodies++;
          wrong.push(`${what}: complete 206 (${g.body.length} bytes) that are not the blob's`);
        }
      } else if (isCompleteBody(g)) {
        wrong.push(`${what}: complete 200 of wrong content`);
      }
    });
    expect(wrong).toEqual([]);
    figures.faults_injected += fake.count('GET', digest);
    await expectNothingStored(digest);
  });
});

describe('upstream contradicts the manifest', () => {
  it.each([
    ['larger', 10],
    ['smaller', -10],
  ])('a layer %s than the manifest says: refused before any byte, with an OCI error', async (_what, delta) => {
    figures.cases++;
    const repo = `reliability/size-${delta > 0 ? 'larger' : 'smaller'}`;
    const img = addImage(repo, 'v1', randomBytes(50_000), { declaredLayerSize: 50_000 + delta });
    const m = await httpRequest(manifestUrl(repo, 'v1'), { headers: { accept: MANIFEST_ACCEPT } });
    expect(m.status).toBe(200);
    const g = await httpRequest(blobUrl(repo, img.layerDigest));
    figures.faults_injected++;
    expectRefused(g, 'layer', 50_000 + delta);
    expect(g.status).toBe(502);
    await expectNothingStored(img.layerDigest);
  });
});

describe('upstream sends wrong bytes for a manifest or an image config', () => {
  it('manifest by tag and by digest, corrupt: 502 with an OCI error, nothing stored; right bytes once upstream heals', async () => {
    figures.cases++;
    const repo = 'reliability/wrong-manifest';
    const img = addImage(repo, 'v1', randomBytes(1000));
    fake.corrupt(img.digest);
    for (const ref of ['v1', img.digest]) {
      const g = await httpRequest(manifestUrl(repo, ref), { headers: { accept: MANIFEST_ACCEPT } });
      figures.faults_injected++;
      expectRefused(g, `manifest ${ref}`, img.bytes.length);
      expect(g.status).toBe(502);
    }
    const cat = mirror.running.mirror.catalogue;
    expect(cat.getTag(`${fake.host}/${repo}`, 'v1')).toBeUndefined();
    expect(cat.getManifest(`${fake.host}/${repo}`, img.digest)).toBeUndefined();
    expect(existsSync(storedPath(mirror.dataDir, img.digest))).toBe(false);

    fake.clearFaults();
    const ok = await httpRequest(manifestUrl(repo, 'v1'), { headers: { accept: MANIFEST_ACCEPT } });
    expect(ok.status).toBe(200);
    expect(ok.body.equals(img.bytes)).toBe(true);
    expect(ok.headers['docker-content-digest']).toBe(img.digest);
    figures.bytes_verified += ok.body.length;
  });

  it('image config corrupt while the mirror reads its platform: the manifest is refused, neither is stored', async () => {
    figures.cases++;
    const repo = 'reliability/wrong-config';
    const img = addImage(repo, 'v1', randomBytes(1000));
    fake.corrupt(img.configDigest);
    const g = await httpRequest(manifestUrl(repo, 'v1'), { headers: { accept: MANIFEST_ACCEPT } });
    figures.faults_injected++;
    expectRefused(g, 'manifest whose config is corrupt', img.bytes.length);
    expect(existsSync(storedPath(mirror.dataDir, img.configDigest))).toBe(false);
    expect(mirror.running.mirror.catalogue.getBlob(img.configDigest)).toBeUndefined();
    expect(mirror.running.mirror.catalogue.getManifest(`${fake.host}/${repo}`, img.digest)).toBeUndefined();
  });

  it('the store holds only verified content afterwards', async () => {
    await settled(mirror);
    const r = await verifyStore(mirror.running.mirror.store, mirror.running.mirror.catalogue);
    expect(r.problems).toEqual([]);
    figures.bytes_verified += r.bytesChecked;
    expect(mirror.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });
});
