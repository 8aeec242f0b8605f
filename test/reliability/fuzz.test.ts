// Reliability: thousands of generated requests from a seeded PRNG against an in-process mirror:
// hostile repository names (`..`, `%2e%2e`, encoded slashes, NUL bytes, very long names), huge and
// malformed Range headers, bad digests, unknown `ns` hosts and registry path prefixes pointing at a
// trap port, oversized paths and headers, random methods, raw malformed HTTP, an upstream manifest
// over the size limit, and slow-loris clients holding sockets open meanwhile. Asserted: no 5xx
// caused by input (502 only where a configured upstream really failed), no crash (/healthz answers
// at the end), no file created or changed outside the store, nothing hostile forwarded upstream,
// and no connection at all to the trap (a loopback port no configuration names).
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyStore } from '../../src/upkeep/verify.js';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { MANIFEST_ACCEPT, MEDIA_TYPES } from '../support/images.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { startTrap, type Trap } from '../support/trap.js';
import { httpRequest, isCompleteBody, OCI_CODES, ociError, report, seededRandom, sha256, sleep, type Got } from './helpers.js';

const SEED = 0xf022;
const MAX_REQUESTS = 3000;
const MAX_MS = 20_000;
const CONCURRENCY = 16;
const SLOW_LORIS = 24;

let fake: FakeUpstream;
let mirror: TestMirror;
let trap: Trap;
let parent: string;
let dataDir: string;
let rangeBlob: { digest: string; bytes: Buffer };
let appImage: { digest: string; bytes: Buffer };

beforeAll(async () => {
  trap = await startTrap();
  fake = await startFakeUpstream();
  // The data dir sits a few levels down a temp parent, with a neighbour the fuzzer aims `..` at.
  parent = await mkdtemp(join(tmpdir(), 'sparse-mirror-fuzz-'));
  await mkdir(join(parent, 'outside'), { recursive: true });
  await writeFile(join(parent, 'outside', 'secret.txt'), 'not for clients\n');
  await mkdir(join(parent, 'a', 'b', 'c'), { recursive: true });
  dataDir = join(parent, 'a', 'b', 'c', 'data');
  mirror = await startTestMirror({
    dataDir,
    upstreams: [{ url: fake.url, aliases: ['registry.fuzz.internal'] }],
    blobs: { requireReference: false },
    log: { level: 'warn' },
  });

  const bytes = randomBytes(100_000);
  rangeBlob = { digest: fake.addBlob('fuzz/ranges', bytes), bytes };
  const layer = randomBytes(2000);
  const layerDigest = fake.addBlob('fuzz/app', layer);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layerDigest] } }));
  const configDigest = fake.addBlob('fuzz/app', config);
  const t = MEDIA_TYPES.oci;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: t.manifest,
      config: { mediaType: t.config, digest: configDigest, size: config.length },
      layers: [{ mediaType: t.layer, digest: layerDigest, size: layer.length }],
    }),
  );
  appImage = { digest: fake.addManifest('fuzz/app', 'v1', manifest, t.manifest), bytes: manifest };
  // Upstream faults a request may legitimately reach (the only allowed source of a 502).
  fake.addManifest('fuzz/huge', 'v1', Buffer.alloc(5 * 1024 * 1024, 0x20), t.manifest);
  fake.failWith('/v2/fuzz/broken/', 503);
  fake.failWith('/v2/fuzz/denied/', 403);

  // Warm: the store holds something to serve (and to range over).
  expect((await httpRequest(`${mirror.url}/v2/fuzz/ranges/blobs/${rangeBlob.digest}`)).status).toBe(200);
  expect((await httpRequest(`${mirror.url}/v2/fuzz/app/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } })).status).toBe(200);
});
afterAll(async () => {
  await mirror?.stop();
  await fake?.stop();
  await trap?.stop();
  if (parent) await rm(parent, { recursive: true, force: true });
});

/** path → "size mtime" of everything under `root`, except the store's own directory. */
async function snapshot(root: string, skip: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    const p = join(e.parentPath, e.name);
    if (p === skip || p.startsWith(`${skip}/`)) continue;
    const st = await stat(p);
    out.set(relative(root, p), `${e.isDirectory() ? 'dir' : st.size} ${st.mtimeMs}`);
  }
  return out;
}

/** Every file in the data dir must be one the store makes. */
async function unexpectedStoreFiles(): Promise<string[]> {
  const allowed = [
    /^mirror\.db(-wal|-shm|-journal)?$/,
    /^blobs$/,
    /^blobs\/sha256$/,
    /^blobs\/sha256\/[a-f0-9]{2}$/,
    /^blobs\/sha256\/([a-f0-9]{2})\/\1[a-f0-9]{62}$/,
    /^tmp$/,
    /^tmp\/\d+$/,
  ];
  const out: string[] = [];
  for (const e of await readdir(dataDir, { recursive: true, withFileTypes: true })) {
    const rel = relative(dataDir, join(e.parentPath, e.name));
    if (!allowed.some((re) => re.test(rel))) out.push(rel);
  }
  return out;
}

type Rnd = ReturnType<typeof seededRandom>;

interface Gen {
  category: string;
  /** Sent with node:http (path verbatim), or as raw bytes over node:net. */
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  raw?: Buffer;
  body?: Buffer;
  /** The repository at the configured upstream this request may reach (a 502 is legitimate only then). */
  upstreamRepo?: string;
  /** Check a 206/200 body against the known blob. */
  rangeCheck?: boolean;
}

const HEX = '0123456789abcdef';
const hex = (r: Rnd, n: number): string => Array.from({ length: n }, () => HEX[r.int(0, 15)]).join('');
const HOSTILE_CHARS = 'abcxyz0189._-/:%@~+!$&\'()*,;=[]{}|\\^`"<>#?ÄéΩ\u2028';

function hostileName(r: Rnd, trap: Trap): string {
  const pieces = [
    '..', '../..', '../../../outside', '%2e%2e', '%2E%2E%2F', '%2e%2e%2f%2e%2e', '..%2f..', '%2f', '%2F', '.%2e', '%c0%ae%c0%ae', '%00',
    '%252e%252e', '.', './', '//', 'a/../b', 'a/./b', 'a//b', '/abs', 'UPPER', 'café', '%ff%fe', '~root', 'a:b', 'a@b',
    `127.0.0.1:${trap.port}`, `localhost:${trap.port}`, `127.1:${trap.port}`, `[::1]:${trap.port}`, `0x7f000001:${trap.port}`,
    'evil.example.com', 'registry.fuzz.internal', 'fuzz/app', 'library', '-lead', 'trail-', 'a__b', 'a---b',
  ];
  const parts: string[] = [];
  const n = r.int(1, 4);
  for (let i = 0; i < n; i++) {
    const roll = r.next();
    if (roll < 0.5) parts.push(r.pick(pieces));
    else if (roll < 0.8) parts.push(Array.from({ length: r.int(1, 12) }, () => r.pick([...HOSTILE_CHARS])).join(''));
    else parts.push(Array.from({ length: r.int(1, 12) }, () => r.pick([...'abcdefghijklmnopqrstuvwxyz0123456789'])).join(''));
  }
  let name = parts.join(r.bool(0.8) ? '/' : r.pick(['%2f', '%2F', '\\', '/./', '/../']));
  if (r.bool(0.05)) name = 'a'.repeat(r.pick([255, 256, 1000, 5000]));
  if (r.bool(0.03)) name = Array.from({ length: 200 }, () => 'ab').join('/');
  // node:http refuses to send control characters and spaces in a path: those go raw instead.
  return encodeURI(name).replace(/%25/g, '%');
}

function hostileDigest(r: Rnd): string {
  return r.pick([
    `sha256:${hex(r, 64)}`,
    `sha256:${hex(r, 63)}`,
    `sha256:${hex(r, 65)}`,
    `sha256:${hex(r, 64).toUpperCase()}`,
    `sha512:${hex(r, 128)}`,
    `sha512:${hex(r, 64)}`,
    `md5:${hex(r, 32)}`,
    'sha256:',
    ':',
    'sha256:..%2f..%2f..%2foutside',
    'sha256%3A' + hex(r, 64),
    `SHA256:${hex(r, 64)}`,
    `sha256:${'0'.repeat(64)}`,
    `sha256+b64:${hex(r, 64)}`,
    `sha256:${hex(r, 60)}%00abc`,
    `sha256:${'f'.repeat(5000)}`,
    rangeBlob.digest,
    appImage.digest,
  ]);
}

function hostileRange(r: Rnd): string {
  const n = (): string => r.pick([String(r.int(0, 99_999)), String(r.int(0, 200_000)), '99999999999999999999999', '9007199254740993', '-1', '0', '', '1e3', '0x10', ' 5']);
  return r.pick([
    `bytes=${r.int(0, 99_999)}-${r.int(0, 99_999)}`,
    `bytes=${r.int(0, 99_999)}-`,
    `bytes=-${r.int(0, 200_000)}`,
    `bytes=${n()}-${n()}`,
    `bytes=0-0,5-9`,
    `bytes=0-1, 2-3`,
    'bytes=-0',
    'bytes=-',
    'bytes=',
    'bits=0-10',
    'bytes=5-1',
    `bytes=${'9'.repeat(r.int(15, 40))}-`,
    `bytes=0-${'9'.repeat(r.int(15, 40))}`,
    `bytes=${'0,'.repeat(r.int(10, 2000))}0`,
    'bytes=0-100000',
    'bytes=99999-99999',
    'bytes=100000-',
    `BYTES=${r.int(0, 10)}-${r.int(10, 20)}`,
    'x'.repeat(r.int(1, 8000)),
  ]);
}

const METHODS = ['GET', 'GET', 'GET', 'HEAD', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'PROPFIND', 'MKCOL', 'PURGE', 'LINK'];

function generate(r: Rnd, trap: Trap): Gen {
  const roll = r.int(0, 99);
  const method = r.pick(METHODS);
  if (roll < 30) {
    // Hostile names in every API route.
    const name = hostileName(r, trap);
    const path = r.pick([
      `/v2/${name}/manifests/${r.pick(['v1', 'latest', hostileDigest(r), '..', '%2e%2e', 'a'.repeat(200)])}`,
      `/v2/${name}/blobs/${hostileDigest(r)}`,
      `/v2/${name}/tags/list`,
      `/v2/${name}/tags/list?n=${r.pick(['1', '-1', '99999999', 'abc', '1e2'])}&last=${r.pick(['v1', '..', '%00', 'a'.repeat(300)])}`,
      `/v2/${name}/blobs/uploads/`,
      `/v2/${name}/referrers/${hostileDigest(r)}`,
      `/v2/${name}`,
      `/${name}/v2/`,
    ]);
    return { category: 'hostile-name', method, path };
  }
  if (roll < 42) {
    // Registry selection pointing at hosts that are not configured, the trap first of all.
    const host = r.pick([
      trap.host, `localhost:${trap.port}`, `127.1:${trap.port}`, `[::1]:${trap.port}`, `2130706433:${trap.port}`, `0177.0.0.1:${trap.port}`,
      `${trap.host}.`, `${trap.host}/`, `http://${trap.host}`, `user@${trap.host}`, `${trap.host}#x`, `${trap.host}%00`, 'evil.example.com',
      'docker.io', 'registry-1.docker.io', 'ghcr.io', '', 'REGISTRY.FUZZ.INTERNAL', fake.host,
    ]);
    const repo = r.pick(['fuzz/app', 'library/alpine', 'x', 'fuzz/none']);
    const ref = r.pick(['v1', appImage.digest, rangeBlob.digest]);
    const kind = ref === rangeBlob.digest ? 'blobs' : 'manifests';
    const form = r.int(0, 3);
    const path =
      form === 0
        ? `/v2/${repo}/${kind}/${ref}?ns=${encodeURIComponent(host)}`
        : form === 1
          ? `/v2/${host}/${repo}/${kind}/${ref}`
          : form === 2
            ? `/v2/${repo}/${kind}/${ref}?ns=${encodeURIComponent(host)}&ns=${encodeURIComponent(fake.host)}`
            : `/v2/${repo}/${kind}/${ref}?ns=${host}`;
    return { category: 'foreign-registry', method: r.pick(['GET', 'HEAD']), path, upstreamRepo: repo, headers: { accept: MANIFEST_ACCEPT } };
  }
  if (roll < 57) {
    // Range headers on a stored blob; answers are checked against its bytes.
    return {
      category: 'range',
      method: r.pick(['GET', 'GET', 'HEAD']),
      path: `/v2/fuzz/ranges/blobs/${rangeBlob.digest}`,
      headers: { range: hostileRange(r), ...(r.bool(0.1) ? { 'if-range': '"x"' } : {}) },
      rangeCheck: true,
    };
  }
  if (roll < 65) {
    // Requests a configured upstream answers: found, not found, failing (502), refusing, too large.
    const repo = r.pick(['fuzz/app', 'fuzz/broken', 'fuzz/denied', 'fuzz/huge', 'fuzz/nothing', 'fuzz/ranges']);
    const ref = r.pick(['v1', 'v2', appImage.digest, `sha256:${hex(r, 64)}`]);
    const kind = r.pick(['manifests', 'manifests', 'blobs', 'tags']);
    const path = kind === 'tags' ? `/v2/${repo}/tags/list` : `/v2/${repo}/${kind}/${kind === 'blobs' && !ref.includes(':') ? `sha256:${hex(r, 64)}` : ref}`;
    return { category: 'upstream', method: r.pick(['GET', 'HEAD']), path, upstreamRepo: repo, headers: { accept: MANIFEST_ACCEPT } };
  }
  if (roll < 72) {
    // Oversized paths, queries and headers.
    const big = 'a'.repeat(r.pick([1000, 8000, 16_000, 70_000]));
    const which = r.int(0, 4);
    if (which === 4 && r.bool(0.25)) {
      // An oversized manifest pushed at a read-only mirror.
      const body = Buffer.alloc(4 * 1024 * 1024 + r.int(1, 100_000), 0x7b);
      return { category: 'oversized-body', method: r.pick(['PUT', 'POST']), path: '/v2/fuzz/app/manifests/v1', headers: { 'content-type': MEDIA_TYPES.oci.manifest }, body };
    }
    if (which === 0) return { category: 'oversized', method, path: `/v2/${big}/manifests/v1` };
    if (which === 1) return { category: 'oversized', method, path: `/v2/fuzz/app/manifests/v1?${big}` };
    if (which === 2) return { category: 'oversized', method, path: `/v2/fuzz/app/manifests/v1`, headers: { 'x-big': big } };
    return { category: 'oversized', method, path: `/v2/fuzz/app/manifests/${big}` };
  }
  if (roll < 87) {
    // Raw bytes: what node:http would refuse to send.
    const name = r.pick(['fuzz/app', 'a\0b', '..\0/..', 'a b', 'a\tb', 'x\u0001y', 'ok']);
    const target = r.pick([
      `/v2/${name}/manifests/v1`,
      `/v2/fuzz/app/manifests/v1\0`,
      `http://${trap.host}/v2/fuzz/app/manifests/v1`,
      `http://${trap.host}/v2/`,
      `//${trap.host}/v2/`,
      `${trap.host}:443`,
      '*',
      '/v2/../../../../etc/passwd',
      '/v2/%2e%2e/%2e%2e/outside/secret.txt',
      `/v2/fuzz/app/blobs/${rangeBlob.digest}`,
      '\\v2\\fuzz',
      '/v2/\\..\\..\\outside',
    ]);
    const m = r.pick(['GET', 'HEAD', 'CONNECT', 'FOO', 'G\0T', 'get', 'POST', 'DELETE']);
    const host = r.pick([`127.0.0.1:${r.int(1, 65535)}`, trap.host, 'a b', '', '[::1', 'évil', 'x\0y', '127.0.0.1']);
    const version = r.pick(['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/9.9', '']);
    const extra = r.pick([
      '',
      `Range: bytes=0-1\r\n`,
      'Content-Length: 5\r\n\r\nhello',
      'Content-Length: -1\r\n',
      'Transfer-Encoding: chunked\r\nContent-Length: 3\r\n',
      'Transfer-Encoding: chunked\r\n\r\nzz\r\n',
      'X-Bad\0Header: 1\r\n',
      'Header-Without-Colon\r\n',
      `X-Long: ${'b'.repeat(20_000)}\r\n`,
    ]);
    const head = `${m} ${target}${version ? ` ${version}` : ''}\r\n${host ? `Host: ${host}\r\n` : ''}${extra}`;
    const raw = Buffer.from(head.endsWith('\r\n\r\n') || head.includes('\r\n\r\n') ? head : `${head}\r\n`, 'latin1');
    return { category: 'raw', raw: r.bool(0.05) ? randomBytes(r.int(1, 300)) : raw };
  }
  // Random methods on plain routes.
  return {
    category: 'method',
    method,
    path: r.pick(['/v2/', '/v2', '/healthz', '/readyz', '/metrics', '/', '/v2/fuzz/app/manifests/v1', `/v2/fuzz/app/blobs/${appImage.digest}`, '/v2/fuzz/app/blobs/uploads/', '/v2/_catalog']),
    headers: r.bool(0.3) ? { 'content-type': 'application/json', 'x-fuzz': 'x'.repeat(r.int(0, 100)) } : {},
  };
}

/** Sends raw bytes; resolves with the status of the first response line (0: closed without one). */
function rawRequest(url: string, bytes: Buffer, timeoutMs = 8000): Promise<{ status: number; head: string; timedOut: boolean }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    let buf = '';
    let settledFlag = false;
    const socket = connect(Number(u.port), u.hostname);
    const done = (timedOut = false): void => {
      if (settledFlag) return;
      settledFlag = true;
      clearTimeout(timer);
      socket.destroy();
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf);
      resolve({ status: m ? Number(m[1]) : 0, head: buf.slice(0, 300), timedOut });
    };
    const timer = setTimeout(() => done(true), timeoutMs);
    socket.on('connect', () => socket.end(bytes));
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n\r\n')) done();
    });
    socket.on('error', () => done());
    socket.on('close', () => done());
  });
}

/** A slow-loris client: sends a request header one byte at a time and never finishes it. */
function slowLoris(url: string, r: Rnd): { socket: Socket; sent: () => number; stop: () => void } {
  const u = new URL(url);
  const socket = connect(Number(u.port), u.hostname);
  const text = `GET /v2/fuzz/app/manifests/v1 HTTP/1.1\r\nHost: ${u.host}\r\n${'X-Slow: '.padEnd(4000, 'z')}`;
  let pos = 0;
  socket.on('error', () => {});
  const timer = setInterval(() => {
    if (socket.destroyed || pos >= text.length) return;
    socket.write(text[pos++]!);
  }, r.int(50, 250));
  return {
    socket,
    sent: () => pos,
    stop: () => {
      clearInterval(timer);
      socket.destroy();
    },
  };
}

describe('fuzzing the HTTP API', () => {
  it(`${MAX_REQUESTS} seeded requests (at most ${MAX_MS / 1000} s) with slow-loris clients: no input-caused 5xx, no crash, no file outside the store, no foreign connection`, { timeout: 58_000 }, async () => {
    const started = performance.now();
    const r = seededRandom(SEED);
    const before = await snapshot(parent, dataDir);
    // The trap does count: one connection of our own, taken off again.
    await new Promise<void>((resolve) => connect(trap.port, '127.0.0.1').once('connect', function (this: Socket) { this.destroy(); resolve(); }).once('error', () => resolve()));
    await sleep(50);
    expect(trap.connections).toBe(1);
    trap.connections = 0;
    const loris = Array.from({ length: SLOW_LORIS }, () => slowLoris(mirror.url, r));

    const statuses = new Map<number, number>();
    const categories = new Map<string, number>();
    const problems: string[] = [];
    let legit502 = 0;
    let rangeBytesVerified = 0;
    let rawClosedWithoutResponse = 0;
    let sent = 0;
    const latencies: number[] = [];
    const deadline = Date.now() + MAX_MS;
    const gens: Gen[] = [];
    for (let i = 0; i < MAX_REQUESTS; i++) gens.push(generate(r, trap));

    const checkHttp = (g: Gen, res: Got): void => {
      const where = `${g.category} ${g.method} ${g.path?.slice(0, 160)} ${JSON.stringify(g.headers ?? {}).slice(0, 120)}`;
      if (res.status === 0) {
        // A server may answer a large upload early and close while the client is still sending.
        if (g.body && /EPIPE|ECONNRESET/.test(res.error ?? '')) return;
        problems.push(`${where}: no response (${res.error})`);
        return;
      }
      if (res.status >= 500) {
        // 502 only when the request went to a configured upstream, and that upstream really saw it.
        // Any generator may produce a well-formed path to the configured upstream (a random method
        // with a valid name, say), so the repository is also read off the path itself.
        const repo = g.upstreamRepo ?? /^\/v2\/([a-z0-9._/-]+?)\/(?:manifests|blobs|tags)\//.exec(g.path ?? '')?.[1];
        const reached = repo !== undefined && fake.requests.some((q) => q.path.startsWith(`/v2/${repo}/`));
        if (res.status === 502 && reached && (g.method === 'HEAD' || ociError(res))) legit502++;
        else problems.push(`${where}: ${res.status} ${res.body.toString().slice(0, 200)}`);
      }
      const body = res.body.toString('utf8');
      if (/\n\s+at .+\(|node:internal|\/src\/.+\.ts/.test(body)) problems.push(`${where}: stack or source path in the body`);
      if (res.status >= 400 && String(res.headers['content-type'] ?? '').includes('json') && g.method !== 'HEAD') {
        const e = ociError(res);
        if (!e || !OCI_CODES.includes(e.code)) problems.push(`${where}: error body is not an OCI error: ${body.slice(0, 200)}`);
      }
      if (g.rangeCheck && g.method === 'GET') {
        const full = rangeBlob.bytes;
        if (res.status === 200) {
          if (!isCompleteBody(res) || sha256(res.body) !== rangeBlob.digest) problems.push(`${where}: 200 without the whole blob`);
          else rangeBytesVerified += res.body.length;
        } else if (res.status === 206) {
          const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(res.headers['content-range']));
          if (!m || Number(m[3]) !== full.length || !full.subarray(Number(m[1]), Number(m[2]) + 1).equals(res.body) || !res.complete) {
            problems.push(`${where}: 206 ${String(res.headers['content-range'])} with wrong bytes (${res.body.length})`);
          } else rangeBytesVerified += res.body.length;
        } else if (res.status === 416) {
          if (res.headers['content-range'] !== `bytes */${full.length}`) problems.push(`${where}: 416 without Content-Range`);
        } else problems.push(`${where}: unexpected ${res.status} for a Range request`);
      }
    };

    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < gens.length && Date.now() < deadline) {
          const g = gens[next++]!;
          sent++;
          categories.set(g.category, (categories.get(g.category) ?? 0) + 1);
          const t0 = performance.now();
          if (g.raw) {
            const res = await rawRequest(mirror.url, g.raw);
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
            if (res.timedOut) problems.push(`raw ${JSON.stringify(g.raw.toString('latin1').slice(0, 120))}: no answer in 8 s`);
            else if (res.status === 0) rawClosedWithoutResponse++;
            else if (res.status >= 500) problems.push(`raw ${JSON.stringify(g.raw.toString('latin1').slice(0, 160))}: ${res.head.split('\r\n')[0]}`);
          } else {
            const res = await httpRequest(mirror.url, { method: g.method, path: g.path, headers: g.headers, body: g.body, timeoutMs: 15_000 });
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
            checkHttp(g, res);
          }
          latencies.push(performance.now() - t0);
        }
      }),
    );
    const fuzzMs = performance.now() - started;

    // The slow-loris sockets were held open throughout, and the server still answers everyone else.
    const lorisOpen = loris.filter((l) => !l.socket.destroyed).length;
    const lorisBytes = loris.reduce((n, l) => n + l.sent(), 0);
    const health = await httpRequest(`${mirror.url}/healthz`, { timeoutMs: 5000 });
    const manifest = await httpRequest(`${mirror.url}/v2/fuzz/app/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT }, timeoutMs: 5000 });
    for (const l of loris) l.stop();
    await sleep(50);

    const after = await snapshot(parent, dataDir);
    const changedOutside = [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k));
    const strayInStore = await unexpectedStoreFiles();
    const store = await verifyStore(mirror.running.mirror.store, mirror.running.mirror.catalogue);
    // Only valid names ever went upstream.
    const forwarded = fake.requests.filter((q) => !/^\/v2\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*\/(manifests|blobs|tags)\//.test(q.path) && q.path !== '/v2/');
    const internalErrors = mirror.logs.filter((l) => l.includes('"internal error"'));
    latencies.sort((a, b) => a - b);

    report('fuzz', {
      seed: `0x${SEED.toString(16)}`,
      requests: sent,
      ...Object.fromEntries([...categories].map(([k, v]) => [`cat_${k}`, v])),
      statuses: JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0]))),
      legit_502: legit502,
      raw_closed_without_response: rawClosedWithoutResponse,
      range_bytes_verified: rangeBytesVerified,
      slow_loris_sockets: SLOW_LORIS,
      slow_loris_still_open: lorisOpen,
      slow_loris_bytes_sent: lorisBytes,
      p50_ms: Math.round(latencies[Math.floor(latencies.length / 2)] ?? 0),
      p99_ms: Math.round(latencies[Math.floor(latencies.length * 0.99)] ?? 0),
      trap_connections: trap.connections,
      upstream_requests: fake.requests.length,
      files_changed_outside_store: changedOutside.length,
      problems: problems.length,
      fuzz_ms: Math.round(fuzzMs),
    });

    expect(problems.slice(0, 30)).toEqual([]);
    expect(health.status).toBe(200);
    expect(manifest.status).toBe(200);
    expect(sha256(manifest.body)).toBe(appImage.digest);
    expect(trap.connections, `connections to the trap: ${trap.firstBytes.join(' | ').slice(0, 500)}`).toBe(0);
    expect(changedOutside).toEqual([]);
    expect(strayInStore).toEqual([]);
    expect(store.problems).toEqual([]);
    expect(forwarded.map((q) => q.url)).toEqual([]);
    expect(internalErrors.slice(0, 5)).toEqual([]);
    expect(sent).toBeGreaterThanOrEqual(Math.min(MAX_REQUESTS, 1000));
    expect(lorisOpen).toBeGreaterThan(0);
  });
});
