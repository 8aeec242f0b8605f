// containerd (ctr 1.6, Debian) pulling through the mirror, configured the two ways a site would:
//
// - "mirror host": certs.d/<registry host:port>/hosts.toml lists the mirror as a `[host."http://…"]`
//   entry in front of `server` = the real registry, so containerd can fall back to it;
// - "air-gapped": certs.d/registry.example/hosts.toml has the mirror as its `server` (registry.example
//   is only an alias the mirror knows for its upstream; nothing to fall back to).
//
// The upstream is a real distribution 2.8 holding a 7-platform image with buildx attestations, in
// OCI and in Docker media types. Between containerd and the mirror, and between the mirror and the
// registry, sit counting proxies, so the tests see the exact requests (with their `?ns=`) and who
// made them (the mirror sends `User-Agent: sparse-mirror`, containerd `containerd/…`).
//
// Observed with containerd 1.6.20 (Debian): with a fallback, a refusal by the mirror is not final.
// containerd asks the next host after ANY error status of the mirror (403 as well as 404), for the
// tag HEAD, for manifests by digest and for blobs, so `--platform linux/s390x` succeeds straight from
// the registry and prints nothing about the mirror. Only the air-gapped layout enforces the
// allow-list; there the 403 message reaches the user and the 404 variant's message is dropped.
//
// Set OBSERVED_CLIENT_OUTPUT=/some/file.md to have the test write down what ctr and skopeo print
// for a platform the mirror does not carry (for the README).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ctr, SNAPSHOTTER, startContainerd, writeHostsDir, type ContainerdHandle } from '../support/containerd.js';
import { startCountingProxy, type CountingProxy } from '../support/counting-proxy.js';
import type { ExecResult } from '../support/exec.js';
import { pushMultiPlatformImage, type Format, type PushedChild, type PushedIndex } from '../support/images.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { skopeoCopyToDir } from '../support/skopeo.js';

const ALIAS = 'registry.example';
const NOT_MIRRORED = 'platform linux/s390x is not mirrored here (this mirror carries linux/amd64, linux/arm64)';

let registry: RegistryHandle;
/** mirror → registry: what the mirror (and containerd, when it falls back) fetched upstream. */
let upstream: CountingProxy;
let containerd: ContainerdHandle;

interface MirrorUnderTest {
  mirror: TestMirror;
  /** containerd → mirror */
  front: CountingProxy;
}
let denied: MirrorUnderTest;
let notFound: MirrorUnderTest;

const tempDirs: string[] = [];
const observed: Array<{ title: string; command: string; result: ExecResult }> = [];
let nsCounter = 0;

/** Pushes a fresh copy of the 7-platform image (fresh layers) so every test starts cold. */
function pushApp(repo: string, format: Format): Promise<PushedIndex> {
  return pushMultiPlatformImage(registry.url, repo, '1.0', { format, attestations: true });
}

function child(index: PushedIndex, arch: string): PushedChild {
  const found = index.children.find((c) => c.platform?.architecture === arch && !c.attestationFor);
  if (!found) throw new Error(`no ${arch} child in ${index.repo}`);
  return found;
}

/**
 * `ctr -n <fresh namespace> images pull --platform P REF`. A namespace per pull keeps the content
 * list of each pull separate.
 */
async function pull(ref: string, hostsDir: string, platform: string): Promise<{ result: ExecResult; ns: string; args: string[] }> {
  const ns = `t${++nsCounter}`;
  const args = ['images', 'pull', '--snapshotter', SNAPSHOTTER, '--hosts-dir', hostsDir, '--platform', platform, ref];
  const result = await ctr(containerd, ['-n', ns, ...args], 30_000);
  return { result, ns, args };
}

/** ctr's stderr less the line its progress display logs when it outlives the pull by a moment. */
function withoutProgressRace(stderr: string): string {
  return stderr
    .split('\n')
    .filter((l) => !/level=error msg="active check failed" error="context canceled"/.test(l))
    .join('\n')
    .trim();
}

async function contentOf(ns: string): Promise<string[]> {
  const r = await ctr(containerd, ['-n', ns, 'content', 'ls', '-q']);
  if (r.code !== 0) throw new Error(`ctr content ls failed: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l !== '').sort();
}

/** The mirror as `[host."http://MIRROR"]` for registry `upstream.host`, with the registry as `server`. */
function hostsWithFallback(m: MirrorUnderTest): Promise<string> {
  return writeHostsDir(upstream.host, { server: upstream.url, mirrors: [m.front.url] });
}

/** Air-gapped: the mirror is the `server` for `registry.example`. */
function hostsAirGapped(m: MirrorUnderTest): Promise<string> {
  return writeHostsDir(ALIAS, { server: m.front.url });
}

const byContainerd = (r: { headers: Record<string, unknown> }): boolean => String(r.headers['user-agent']).startsWith('containerd');
const byMirror = (r: { headers: Record<string, unknown> }): boolean => r.headers['user-agent'] === 'sparse-mirror';

function record(title: string, args: string[], result: ExecResult): void {
  observed.push({ title, command: args.join(' '), result });
}

async function startMirrorUnderTest(notMirroredResponse: 'denied' | 'not-found'): Promise<MirrorUnderTest> {
  const mirror = await startTestMirror({ upstreams: [{ url: upstream.url, aliases: [ALIAS] }], notMirroredResponse });
  const front = await startCountingProxy(mirror.url);
  return { mirror, front };
}

beforeAll(async () => {
  [registry, containerd] = await Promise.all([startRegistry(), startContainerd()]);
  upstream = await startCountingProxy(registry.url);
  [denied, notFound] = await Promise.all([startMirrorUnderTest('denied'), startMirrorUnderTest('not-found')]);
});

afterAll(async () => {
  for (const m of [denied, notFound]) {
    await m?.front.stop();
    await m?.mirror.stop({ removeData: true });
  }
  await upstream?.stop();
  await Promise.all([registry?.stop(), containerd?.stop()]);
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
  const out = process.env.OBSERVED_CLIENT_OUTPUT;
  if (out && observed.length > 0) {
    const text = observed
      .map((o) => `### ${o.title}\n\n\`${o.command}\` → exit ${o.result.code}\n\n\`\`\`\n${o.result.stderr.trim()}\n\`\`\`\n`)
      .join('\n');
    await writeFile(out, text);
  }
});

describe('ctr through the mirror as a [host] entry with the real registry as server (fallback)', () => {
  for (const format of ['oci', 'docker'] as const) {
    it(`pulls linux/arm64 of a ${format} index through the mirror, content identical to upstream`, async () => {
      const image = await pushApp(`fallback/${format}`, format);
      const hostsDir = await hostsWithFallback(denied);
      denied.front.reset();
      upstream.reset();
      const ref = `${upstream.host}/${image.repo}:1.0`;
      const { result, ns } = await pull(ref, hostsDir, 'linux/arm64');
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toContain('unpacking linux/arm64');

      const arm64 = child(image, 'arm64');
      const expected = [image.digest, arm64.digest, arm64.configDigest, ...arm64.layers.map((l) => l.digest)].sort();
      expect(await contentOf(ns)).toEqual(expected);
      const stored = await ctr(containerd, ['-n', ns, 'content', 'get', image.digest]);
      expect(stored.stdoutBytes.equals(image.bytes)).toBe(true); // the index, byte for byte

      // Everything came through the mirror, each request with ?ns=<registry>; containerd itself
      // never had to fall back to the registry.
      const ns_ = `?ns=${encodeURIComponent(upstream.host)}`;
      expect(denied.front.requests.length).toBeGreaterThanOrEqual(expected.length + 1); // + HEAD of the tag
      expect(denied.front.lines().filter((l) => !l.endsWith(ns_))).toEqual([]);
      expect(denied.front.count('HEAD', `/v2/${image.repo}/manifests/1.0${ns_}`)).toBe(1);
      expect(upstream.requests.filter(byContainerd)).toEqual([]);
      for (const digest of expected) expect(denied.front.count('GET', digest)).toBe(1);
      // The mirror fetched only the arm64 image (and its attestation's manifest is not asked for by ctr).
      const s390x = child(image, 's390x');
      expect(upstream.requests.filter(byMirror).filter((r) => r.path.includes(s390x.digest))).toEqual([]);
    });
  }

  // What containerd 1.6.20 really does when the mirror refuses the s390x manifest: its fetcher
  // moves on to the next host on ANY error (403 as well as 404), so the pull quietly succeeds from
  // the registry itself (requests without ?ns=), whichever notMirroredResponse the mirror uses. The
  // mirror itself never fetches s390x content. A site that wants the allow-list enforced must not
  // list a fallback: use the air-gapped layout (mirror as `server`) below.
  for (const [mode, getMirror] of [
    ['denied', () => denied],
    ['not-found', () => notFound],
  ] as const) {
    it(`linux/s390x (notMirroredResponse: ${mode}): the mirror refuses, containerd falls back to the registry and succeeds`, async () => {
      const m = getMirror();
      const image = await pushApp(`fallback/s390x-${mode}`, 'oci');
      const hostsDir = await hostsWithFallback(m);
      m.front.reset();
      upstream.reset();
      const ref = `${upstream.host}/${image.repo}:1.0`;
      const { result, ns, args } = await pull(ref, hostsDir, 'linux/s390x');
      record(`ctr, mirror as [host] before the real registry (fallback), notMirroredResponse: ${mode}`, args, result);
      const s390x = child(image, 's390x');
      expect(result.code, result.stderr).toBe(0);
      // The fallback is silent: no error from the fetch (ctr's progress display may race its own
      // cancellation at the very end, "active check failed … context canceled": not the pull's).
      expect(withoutProgressRace(result.stderr)).toBe('');

      // Every s390x request went to the mirror first (with ?ns=) and was refused: the manifest with
      // the not-mirrored error, its config and layer with 404 BLOB_UNKNOWN (no stored manifest
      // references them)...
      const ns_ = `?ns=${encodeURIComponent(upstream.host)}`;
      const s390xContent = [s390x.digest, s390x.configDigest, s390x.layers[0]!.digest];
      const atMirror = (digest: string) => m.front.requests.filter((r) => r.path.endsWith(digest)).map((r) => `${r.status} ${r.method} ${r.url}`);
      expect(atMirror(s390x.digest)).toEqual([`${mode === 'denied' ? 403 : 404} GET /v2/${image.repo}/manifests/${s390x.digest}${ns_}`]);
      expect(atMirror(s390x.configDigest)).toEqual([`404 GET /v2/${image.repo}/blobs/${s390x.configDigest}${ns_}`]);
      expect(atMirror(s390x.layers[0]!.digest)).toEqual([`404 GET /v2/${image.repo}/blobs/${s390x.layers[0]!.digest}${ns_}`]);
      // ...then containerd fetched each of them from the registry directly (no ?ns=).
      const direct = upstream.requests.filter(byContainerd).map((r) => `${r.method} ${r.url}`);
      expect([...direct].sort()).toEqual(
        [
          `GET /v2/${image.repo}/manifests/${s390x.digest}`,
          `GET /v2/${image.repo}/blobs/${s390x.configDigest}`,
          `GET /v2/${image.repo}/blobs/${s390x.layers[0]!.digest}`,
        ].sort(),
      );
      // The mirror itself fetched only the index, nothing of s390x.
      for (const digest of s390xContent) expect(upstream.requests.filter(byMirror).filter((r) => r.path.endsWith(digest))).toEqual([]);
      expect(upstream.requests.filter(byMirror).map((r) => `${r.method} ${r.url}`)).toEqual([`GET /v2/${image.repo}/manifests/1.0`]);
      expect(await contentOf(ns)).toEqual([image.digest, ...s390xContent].sort());
    });
  }
});

describe(`ctr with the mirror as server for ${ALIAS} (air-gapped, no fallback)`, () => {
  for (const format of ['oci', 'docker'] as const) {
    it(`pulls linux/arm64 of a ${format} index; content identical to upstream; requests carry ?ns=${ALIAS}`, async () => {
      const image = await pushApp(`airgap/${format}`, format);
      const hostsDir = await hostsAirGapped(denied);
      denied.front.reset();
      upstream.reset();
      const { result, ns } = await pull(`${ALIAS}/${image.repo}:1.0`, hostsDir, 'linux/arm64');
      expect(result.code, result.stderr).toBe(0);
      const arm64 = child(image, 'arm64');
      const expected = [image.digest, arm64.digest, arm64.configDigest, ...arm64.layers.map((l) => l.digest)].sort();
      expect(await contentOf(ns)).toEqual(expected);
      expect(denied.front.requests.length).toBeGreaterThan(0);
      expect(denied.front.lines().filter((l) => !l.endsWith(`?ns=${ALIAS}`))).toEqual([]);
      expect(upstream.requests.filter(byContainerd)).toEqual([]);
      expect(upstream.requests.filter(byMirror).length).toBeGreaterThan(0);
    });
  }

  it('linux/s390x fails with the mirror message (403 DENIED)', async () => {
    const image = await pushApp('airgap/s390x', 'oci');
    const hostsDir = await hostsAirGapped(denied);
    upstream.reset();
    const { result, args } = await pull(`${ALIAS}/${image.repo}:1.0`, hostsDir, 'linux/s390x');
    record('ctr, mirror as server (air-gapped), notMirroredResponse: denied (default)', args, result);
    const s390x = child(image, 's390x');
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      `ctr: failed to copy: httpReadSeeker: failed open: unexpected status code ${denied.front.url}/v2/${image.repo}/manifests/${s390x.digest}?ns=${ALIAS}: 403 Forbidden - Server message: denied: ${NOT_MIRRORED}; ${s390x.digest} is the linux/s390x entry of index ${ALIAS}/${image.repo}@${image.digest}`,
    );
    expect(upstream.requests.filter((r) => r.path.includes(s390x.digest))).toEqual([]);
  });

  it('linux/s390x with notMirroredResponse: not-found fails, but containerd hides the message', async () => {
    const image = await pushApp('airgap/s390x-404', 'oci');
    const hostsDir = await hostsAirGapped(notFound);
    upstream.reset();
    const { result, args } = await pull(`${ALIAS}/${image.repo}:1.0`, hostsDir, 'linux/s390x');
    record('ctr, mirror as server (air-gapped), notMirroredResponse: not-found', args, result);
    const s390x = child(image, 's390x');
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`${s390x.digest}?ns=${ALIAS} not found: not found`);
    expect(result.stderr).not.toContain('not mirrored');
    expect(upstream.requests.filter((r) => r.path.includes(s390x.digest))).toEqual([]);
  });
});

describe('skopeo against the mirror, for comparison', () => {
  for (const [mode, getMirror] of [
    ['denied', () => denied],
    ['not-found', () => notFound],
  ] as const) {
    it(`linux/s390x with notMirroredResponse: ${mode} shows the mirror message`, async () => {
      const image = await pushApp(`skopeo/${mode}`, 'oci');
      const m = getMirror();
      const dest = await mkdtemp(join(tmpdir(), 'ctrd-mirror-skopeo-'));
      tempDirs.push(dest);
      const src = `docker://${m.mirror.host}/${image.repo}:1.0`;
      const result = await skopeoCopyToDir(src, dest, { os: 'linux', arch: 's390x' });
      record(`skopeo 1.9, notMirroredResponse: ${mode}`, ['skopeo', '--override-os', 'linux', '--override-arch', 's390x', 'copy', '--src-tls-verify=false', src, 'dir:DEST'], result);
      expect(result.code).toBe(1);
      const s390x = child(image, 's390x');
      const prefix = mode === 'denied' ? 'denied' : 'manifest unknown';
      expect(result.stderr).toContain(`reading manifest ${s390x.digest} in ${m.mirror.host}/${image.repo}: ${prefix}: ${NOT_MIRRORED}`);
    });
  }
});
