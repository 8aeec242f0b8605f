// Reliability: the upstream becomes unreachable (connection refused, connections reset, or
// accepting and never answering). With tags.ttlSeconds 0 every tag request asks upstream first;
// every tag and digest pulled before must keep serving, byte for byte (stale-if-error), and
// content never pulled gets a clear OCI error, not a 500.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { MANIFEST_ACCEPT, type PushedIndex } from '../support/images.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { httpRequest, isCompleteBody, OCI_CODES, ociError, pool, report, sha256, type Got } from './helpers.js';

let fake: FakeUpstream;
let mirror: TestMirror;
const started = performance.now();
const figures: Record<string, number | string> = {};

beforeAll(async () => {
  fake = await startFakeUpstream();
  mirror = await startTestMirror({
    upstreams: [{ url: fake.url }],
    platforms: ['linux/amd64', 'linux/arm64'],
    tags: { ttlSeconds: 0 },
    // Bounded: a hung upstream is given up on after 1 s per try.
    upstream: { headersTimeoutMs: 1000, bodyIdleTimeoutMs: 1000, connectTimeoutMs: 1000, attempts: 2 },
    log: { level: 'warn' },
  });
});
afterAll(async () => {
  report('upstream-down', { ...figures, ms: Math.round(performance.now() - started) });
  await mirror?.stop({ removeData: true });
  await fake?.stop();
});

interface Expected {
  /** Request path and what it must return. */
  path: string;
  accept?: string;
  digest: string;
  bytes: Buffer;
  kind: 'tag' | 'manifest' | 'blob';
}

/** Everything a pull of `img` (its two allowed platforms) asks for. */
function expectations(img: PushedIndex): Expected[] {
  const out: Expected[] = [
    { path: `/v2/${img.repo}/manifests/${img.tag}`, accept: MANIFEST_ACCEPT, digest: img.digest, bytes: img.bytes, kind: 'tag' },
    { path: `/v2/${img.repo}/manifests/${img.digest}`, accept: MANIFEST_ACCEPT, digest: img.digest, bytes: img.bytes, kind: 'manifest' },
  ];
  for (const child of img.children) {
    out.push({ path: `/v2/${img.repo}/manifests/${child.digest}`, accept: MANIFEST_ACCEPT, digest: child.digest, bytes: child.bytes, kind: 'manifest' });
    for (const d of [child.configDigest, ...child.layers.map((l) => l.digest)]) {
      out.push({ path: `/v2/${img.repo}/blobs/${d}`, digest: d, bytes: Buffer.alloc(0), kind: 'blob' });
    }
  }
  return out;
}

async function get(e: Expected, method = 'GET'): Promise<Got> {
  return httpRequest(`${mirror.url}${e.path}`, { method, headers: e.accept ? { accept: e.accept } : {}, timeoutMs: 20_000 });
}

function expectServed(e: Expected, g: Got, method: string): void {
  expect(g.status, `${method} ${e.path}: ${g.error ?? g.body.toString().slice(0, 200)}`).toBe(200);
  expect(g.headers['docker-content-digest']).toBe(e.digest);
  if (method === 'GET') {
    expect(isCompleteBody(g), e.path).toBe(true);
    expect(sha256(g.body)).toBe(e.digest);
    if (e.kind !== 'blob') expect(g.body.equals(e.bytes)).toBe(true);
  }
}

describe('upstream unreachable', () => {
  const all: Expected[] = [];
  let never: Expected[] = [];

  it('pulls three images (two platforms each) while upstream is up', async () => {
    const images = [
      fake.addImage('reliability/down-a', 'v1'),
      fake.addImage('reliability/down-b', 'latest', { format: 'docker' }),
      fake.addImage('library/down-c', '1.0'),
    ];
    for (const img of images) all.push(...expectations(img));
    for (const e of all) expectServed(e, await get(e), 'GET');
    const extra = fake.addImage('reliability/down-never', 'v1');
    never = expectations(extra);
    figures.references_pulled = all.length;
  });

  for (const mode of ['refuse', 'reset', 'hang'] as const) {
    it(`upstream ${mode === 'refuse' ? 'refuses connections' : mode === 'reset' ? 'resets connections' : 'accepts but never answers'}: every tag and digest pulled before still serves`, { timeout: 45_000 }, async () => {
      if (mode === 'hang') {
        await fake.up();
        fake.delay('/v2/', Infinity);
      } else {
        await fake.down(mode);
      }
      const before = fake.requests.length;
      const t0 = performance.now();
      let served = 0;
      const requests = all.flatMap((e) => ['GET', 'HEAD'].map((method) => ({ e, method })));
      await pool(requests, 16, async ({ e, method }) => {
        expectServed(e, await get(e, method), method);
        served++;
      });
      // Content never pulled: a clear error naming the problem, never a 500.
      let errors = 0;
      const misses = await Promise.all(never.slice(0, 3).map(async (e) => ({ e, g: await get(e) })));
      for (const { e, g } of misses) {
        expect([502, 404], `${e.path}: ${g.status} ${g.body.toString().slice(0, 200)}`).toContain(g.status);
        const err = ociError(g);
        expect(err).toBeDefined();
        expect(OCI_CODES).toContain(err!.code);
        errors++;
      }
      figures[`${mode}_served`] = served;
      figures[`${mode}_never_pulled_errors`] = errors;
      figures[`${mode}_upstream_attempts`] = mode === 'hang' ? fake.requests.length - before : 'n/a';
      figures[`${mode}_ms`] = Math.round(performance.now() - t0);
      expect(mirror.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
      fake.clearFaults();
    });
  }

  it('upstream back: tags are revalidated again and everything still matches', async () => {
    await fake.up();
    fake.clearFaults();
    const before = fake.requests.length;
    for (const e of all) expectServed(e, await get(e), 'GET');
    // ttlSeconds 0: each tag request asked upstream (HEAD) again.
    expect(fake.requests.length - before).toBeGreaterThan(0);
    expect(mirror.logs.some((l) => l.includes('stale-if-error'))).toBe(true);
    figures.stale_served_logged = mirror.logs.filter((l) => l.includes('stale-if-error')).length;
  });
});
