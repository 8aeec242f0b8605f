// Reliability: upstream cuts the connection at random offsets during 100 blob fetches (some cut
// once, some a few times, some more often than the mirror resumes). Whatever happens, no corrupt
// blob is committed, no response that delivers its full Content-Length carries wrong bytes (nor
// does any byte of a cut one), and every blob is served whole on a retry.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyStore } from '../../src/upkeep/verify.js';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { httpRequest, isCompleteBody, listFiles, pool, rehashStore, report, seededRandom, settled, sha256, type Got } from './helpers.js';

const BLOBS = 100;
const SEED = 0x5eed0001;
const REPO = 'reliability/cut';

let fake: FakeUpstream;
let mirror: TestMirror;

beforeAll(async () => {
  fake = await startFakeUpstream();
  mirror = await startTestMirror({
    upstreams: [{ url: fake.url }],
    blobs: { requireReference: false },
    log: { level: 'warn' },
  });
});
afterAll(async () => {
  await mirror?.stop({ removeData: true });
  await fake?.stop();
});

interface Case {
  digest: string;
  bytes: Buffer;
  offset: number;
  /** How many upstream responses for it are cut. */
  times: number;
  kind: 'once' | 'few' | 'repeatedly';
  /** A second client follows the same download with a Range request. */
  range?: { start: number; end: number };
}

describe('upstream cuts connections at random offsets', () => {
  it('never commits or serves a corrupt blob; every blob is served whole on retry', { timeout: 55_000 }, async () => {
    const started = performance.now();
    const rnd = seededRandom(SEED);
    const cases: Case[] = [];
    for (let i = 0; i < BLOBS; i++) {
      // Mostly small and medium blobs, a few tiny ones (the withheld last byte is the whole blob)
      // and a few of about a MiB.
      const size = i < 3 ? i + 1 : rnd.bool(0.08) ? rnd.int(900_000, 1_200_000) : rnd.int(10, 300_000);
      const bytes = randomBytes(size);
      const digest = fake.addBlob(REPO, bytes);
      const roll = rnd.next();
      const kind: Case['kind'] = roll < 0.4 ? 'once' : roll < 0.7 ? 'few' : 'repeatedly';
      // More cuts than the mirror resumes (5) make its first download give up.
      const times = kind === 'once' ? 1 : kind === 'few' ? rnd.int(2, 4) : rnd.int(6, 10);
      // Repeated cuts come early, so the resumes (each cut again) do not add up to the whole blob.
      const offset = kind === 'repeatedly' ? rnd.int(0, Math.floor(size / 10)) : rnd.int(0, size - 1);
      fake.truncateAt(digest, offset, times);
      const c: Case = { digest, bytes, offset, times, kind };
      if (size > 2 && rnd.bool(0.25)) {
        const start = rnd.int(0, size - 2);
        c.range = { start, end: rnd.int(start, size - 1) };
      }
      cases.push(c);
    }

    const url = (d: string): string => `${mirror.url}/v2/${REPO}/blobs/${d}`;
    let requests = 0;
    let completeResponses = 0;
    let shortResponses = 0;
    let errorResponses = 0;
    let hangups = 0;
    let bytesVerified = 0;
    const problems: string[] = [];

    /** Checks one response for a blob: complete ⇒ right digest; cut ⇒ every byte it did carry is right. */
    const check = (c: Case, g: Got, range?: { start: number; end: number }): boolean => {
      requests++;
      if (g.status === 200 && isCompleteBody(g)) {
        if (sha256(g.body) !== c.digest) problems.push(`${c.digest}: complete 200 body with wrong sha256`);
        completeResponses++;
        bytesVerified += g.body.length;
        return true;
      }
      if (g.status === 206 && range) {
        const want = c.bytes.subarray(range.start, range.end + 1);
        if (!want.subarray(0, g.body.length).equals(g.body)) problems.push(`${c.digest}: 206 body differs from the blob's bytes`);
        if (g.complete && g.body.length === want.length) {
          completeResponses++;
          bytesVerified += g.body.length;
          return true;
        }
        shortResponses++;
        return false;
      }
      if (g.status === 200) {
        // Cut short: what did arrive must be the blob's own bytes, and never all of them.
        if (!c.bytes.subarray(0, g.body.length).equals(g.body)) problems.push(`${c.digest}: short body holds wrong bytes`);
        if (g.body.length >= c.bytes.length) problems.push(`${c.digest}: a cut response delivered every byte`);
        shortResponses++;
        return false;
      }
      if (g.status === 0 && g.body.length === 0 && !g.error?.includes('timed out')) {
        // Closed before the status line: the download failed before its first byte could be
        // sent (the headers go out with it). A cut connection, and no wrong byte.
        hangups++;
        return false;
      }
      // Upstream failed before the mirror could start the body: an OCI error, never a 500.
      if (g.status !== 502) problems.push(`${c.digest}: unexpected status ${g.status} ${g.error ?? g.body.toString().slice(0, 200)}`);
      errorResponses++;
      return false;
    };

    // Round 1: every blob fetched cold while its faults are live; a quarter with a Range follower.
    const whole = new Set<string>();
    await pool(cases, 16, async (c) => {
      const gets: Array<Promise<boolean>> = [httpRequest(url(c.digest), { timeoutMs: 25_000 }).then((g) => check(c, g))];
      if (c.range) {
        const r = c.range;
        gets.push(httpRequest(url(c.digest), { headers: { range: `bytes=${r.start}-${r.end}` }, timeoutMs: 25_000 }).then((g) => check(c, g, r)));
      }
      const [full] = await Promise.all(gets);
      if (full) whole.add(c.digest);
    });
    const wholeFirstTime = whole.size;
    await settled(mirror);

    // Retries, faults still live where not used up: each blob must come whole within 3 more tries.
    let retries = 0;
    await pool(
      cases.filter((c) => !whole.has(c.digest)),
      16,
      async (c) => {
        for (let attempt = 0; attempt < 3 && !whole.has(c.digest); attempt++) {
          retries++;
          if (check(c, await httpRequest(url(c.digest), { timeoutMs: 25_000 }))) whole.add(c.digest);
          else await settled(mirror);
        }
      },
    );
    await settled(mirror);
    expect(problems).toEqual([]);
    expect(cases.filter((c) => !whole.has(c.digest)).map((c) => `${c.kind} x${c.times} @${c.offset}/${c.bytes.length}`)).toEqual([]);

    // Faults injected: each cut rule is used by the upstream GETs of its blob, up to `times`.
    const gets = new Map<string, number>();
    for (const r of fake.requests) if (r.method === 'GET') gets.set(r.path, (gets.get(r.path) ?? 0) + 1);
    const upstreamGets = (c: Case): number => gets.get(`/v2/${REPO}/blobs/${c.digest}`) ?? 0;
    const cuts = cases.reduce((n, c) => n + Math.min(c.times, upstreamGets(c)), 0);
    const resumed = cases.filter((c) => upstreamGets(c) > 1).length;

    // Now from the store: every blob served whole without asking upstream again.
    fake.clearFaults();
    const before = fake.requests.length;
    await pool(cases, 16, async (c) => {
      const g = await httpRequest(url(c.digest), { timeoutMs: 25_000 });
      expect(isCompleteBody(g), `${c.digest} from the store`).toBe(true);
      expect(sha256(g.body)).toBe(c.digest);
      bytesVerified += g.body.length;
    });
    expect(fake.requests.length - before).toBe(0);

    // Nothing corrupt on disk, nothing half-written left, catalogue and disk agree.
    const disk = await rehashStore(mirror.dataDir);
    expect(disk.bad).toEqual([]);
    for (const c of cases) expect(disk.digests.has(c.digest), c.digest).toBe(true);
    expect(await listFiles(join(mirror.dataDir, 'tmp'))).toEqual([]);
    const verified = await verifyStore(mirror.running.mirror.store, mirror.running.mirror.catalogue);
    expect(verified.problems).toEqual([]);
    expect(mirror.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);

    report('cut-connections', {
      blobs: BLOBS,
      seed: `0x${SEED.toString(16)}`,
      requests,
      faults_injected: cuts,
      downloads_resumed: resumed,
      whole_first_try: wholeFirstTime,
      retries,
      short_responses: shortResponses,
      error_responses: errorResponses,
      closed_before_headers: hangups,
      complete_responses_verified: completeResponses,
      files_rehashed: disk.files,
      bytes_verified: bytesVerified + disk.bytes,
      corrupt_committed: disk.bad.length,
      corrupt_served: problems.length,
      ms: Math.round(performance.now() - started),
    });
  });
});
