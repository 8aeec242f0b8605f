// Real clients push INTO the mirror: skopeo copies a multi-platform image from a real registry
// (distribution 2.8) to the mirror's local namespace, whole or sparse, under each indexChildren policy.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushMultiPlatformImage, type PushedIndex } from '../support/images.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { skopeo, skopeoCopyToDir, skopeoInspectRaw } from '../support/skopeo.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { PUSH_AUTH, PUSH_TOKEN, sha256 } from '../support/push-client.js';

const CREDS = `u:${PUSH_TOKEN}`;
const PLATFORMS = ['linux/amd64', 'linux/arm64', 'linux/s390x'];

let upstream: RegistryHandle;
let src: PushedIndex;
const mirrors: TestMirror[] = [];
const dirs: string[] = [];

async function mirrorWith(indexChildren: 'all' | 'none' | string[]): Promise<TestMirror> {
  const m = await startTestMirror({
    upstreams: [{ url: upstream.url }],
    auth: PUSH_AUTH,
    push: { enabled: true, indexChildren },
  });
  mirrors.push(m);
  return m;
}

/** skopeo copy (with --preserve-digests) from the real registry into the mirror. */
function copyIn(srcRef: string, dest: string, extra: string[] = [], globals: string[] = []) {
  return skopeo([...globals, 'copy', '--preserve-digests', '--src-tls-verify=false', '--dest-tls-verify=false', '--dest-creds', CREDS, ...extra, srcRef, dest]);
}

/**
 * The mirror's own words about a refused index. skopeo 1.9 with --preserve-digests reports a
 * refused index as "Manifest list must be converted to type … but we cannot modify it" (after the
 * refusal it tries the other list type, which it may not produce) and prints the registry's
 * answer only in its --debug log; without --preserve-digests the registry's answer is in the
 * final error. Both are checked.
 */
function registrySaid(stderr: string): string {
  const line = stderr.split('\n').find((l) => l.includes('Upload of manifest list type') && l.includes('failed:'));
  return line ?? stderr;
}

function childOf(arch: string) {
  return src.children.find((c) => c.platform?.architecture === arch && !c.attestationFor)!;
}

/** Copies only one platform's image manifest (and its blobs) to the mirror, addressed by its digest. */
function copyPlatform(m: TestMirror, repo: string, arch: string) {
  return copyIn(`docker://${upstream.host}/library/app:1.0`, `docker://${m.host}/${repo}@${childOf(arch).digest}`, [], ['--override-os', 'linux', '--override-arch', arch]);
}

async function pullTo(m: TestMirror, ref: string, arch: string) {
  const dest = await mkdtemp(join(tmpdir(), 'push-pull-'));
  dirs.push(dest);
  const r = await skopeoCopyToDir(`docker://${m.host}/${ref}`, dest, { os: 'linux', arch, creds: CREDS });
  return { r, dest };
}

beforeAll(async () => {
  upstream = await startRegistry();
  src = await pushMultiPlatformImage(upstream.url, 'library/app', '1.0', { platforms: PLATFORMS, attestations: true, layersPerImage: 2 });
});
afterAll(async () => {
  // Refusals are answers, never the mirror's own failures.
  for (const m of mirrors) expect(m.logs.filter((l) => l.includes('"level":"error"'))).toEqual([]);
  for (const m of mirrors) await m.stop({ removeData: true });
  await upstream?.stop();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe("indexChildren 'all' (stock behaviour)", () => {
  let m: TestMirror;
  beforeAll(async () => {
    m = await mirrorWith('all');
  });

  it('skopeo copy --all --preserve-digests: the index digest through the mirror equals the source', async () => {
    const r = await copyIn(`docker://${upstream.host}/library/app:1.0`, `docker://${m.host}/local/app:1.0`, ['--all']);
    expect(r.code, r.stderr).toBe(0);
    const raw = await skopeoInspectRaw(`docker://${m.host}/local/app:1.0`, { creds: CREDS });
    expect(raw.equals(src.bytes)).toBe(true);
    expect(sha256(raw)).toBe(src.digest);
    const { r: pull, dest } = await pullTo(m, 'local/app:1.0', 's390x');
    expect(pull.code, pull.stderr).toBe(0);
    expect((await readFile(join(dest, 'manifest.json'))).equals(childOf('s390x').bytes)).toBe(true);
  });

  it('skopeo sync --all --preserve-digests fills a local repository too', async () => {
    const r = await skopeo([
      'sync', '--all', '--preserve-digests', '--src', 'docker', '--dest', 'docker', '--src-tls-verify=false', '--dest-tls-verify=false',
      '--dest-creds', CREDS, `${upstream.host}/library/app:1.0`, `${m.host}/local/synced`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(sha256(await skopeoInspectRaw(`docker://${m.host}/local/synced/app:1.0`, { creds: CREDS }))).toBe(src.digest);
  });

  it('refuses an index-only push with MANIFEST_BLOB_UNKNOWN naming the missing platform', async () => {
    const r = await copyIn(`docker://${upstream.host}/library/app:1.0`, `docker://${m.host}/local/sparse:1.0`, ['--multi-arch', 'index-only'], ['--debug']);
    expect(r.code).not.toBe(0);
    const said = registrySaid(r.stderr);
    expect(said).toContain(`manifest blob unknown: the linux/amd64 manifest ${childOf('amd64').digest} of this index is not in local/sparse`);
    expect(said).toContain(`the linux/s390x manifest ${childOf('s390x').digest}`);
    // Nothing of the refused index was recorded.
    const raw = await skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', CREDS, `docker://${m.host}/local/sparse:1.0`]);
    expect(raw.code).not.toBe(0);
  });

  it('without --preserve-digests skopeo shows the refusal itself', async () => {
    const r = await skopeo([
      'copy', '--multi-arch', 'index-only', '--src-tls-verify=false', '--dest-tls-verify=false', '--dest-creds', CREDS,
      `docker://${upstream.host}/library/app:1.0`, `docker://${m.host}/local/sparse:1.0`,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`manifest blob unknown: the linux/amd64 manifest ${childOf('amd64').digest} of this index is not in local/sparse`);
  });
});

describe("indexChildren 'none' (fully sparse)", () => {
  let m: TestMirror;
  beforeAll(async () => {
    m = await mirrorWith('none');
  });

  it('accepts an index-only push, then per-platform copies of only the wanted platforms', async () => {
    const r = await copyIn(`docker://${upstream.host}/library/app:1.0`, `docker://${m.host}/local/app:1.0`, ['--multi-arch', 'index-only']);
    expect(r.code, r.stderr).toBe(0);
    const arm = await copyPlatform(m, 'local/app', 'arm64');
    expect(arm.code, arm.stderr).toBe(0);
    const raw = await skopeoInspectRaw(`docker://${m.host}/local/app:1.0`, { creds: CREDS });
    expect(sha256(raw)).toBe(src.digest);
    const { r: pull, dest } = await pullTo(m, 'local/app:1.0', 'arm64');
    expect(pull.code, pull.stderr).toBe(0);
    expect((await readFile(join(dest, 'manifest.json'))).equals(childOf('arm64').bytes)).toBe(true);
  });

  it('pulling a platform the sparse index lacks gets the not-mirrored 403 DENIED message', async () => {
    const { r } = await pullTo(m, 'local/app:1.0', 'amd64');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('denied: platform linux/amd64 is not mirrored here (this mirror carries linux/arm64 of local/app:1.0)');
    expect(r.stderr).toContain(`${childOf('amd64').digest} is the linux/amd64 entry of index local/app:1.0`);
  });
});

describe('indexChildren as a platform list', () => {
  let m: TestMirror;
  beforeAll(async () => {
    m = await mirrorWith(['linux/arm64', 'linux/s390x']);
  });

  it('refuses the index while a listed platform is missing, naming it; accepts once they are present', async () => {
    const srcRef = `docker://${upstream.host}/library/app:1.0`;
    const first = await copyIn(srcRef, `docker://${m.host}/local/app:1.0`, ['--multi-arch', 'index-only'], ['--debug']);
    expect(first.code).not.toBe(0);
    expect(registrySaid(first.stderr)).toContain(`the linux/arm64 manifest ${childOf('arm64').digest} of this index is not in local/app`);
    expect(registrySaid(first.stderr)).not.toContain('linux/amd64');

    expect((await copyPlatform(m, 'local/app', 'arm64')).code).toBe(0);
    const second = await copyIn(srcRef, `docker://${m.host}/local/app:1.0`, ['--multi-arch', 'index-only'], ['--debug']);
    expect(second.code).not.toBe(0);
    expect(registrySaid(second.stderr)).toContain(`the linux/s390x manifest ${childOf('s390x').digest}`);
    expect(registrySaid(second.stderr)).not.toContain('linux/arm64 manifest');

    expect((await copyPlatform(m, 'local/app', 's390x')).code).toBe(0);
    const third = await copyIn(srcRef, `docker://${m.host}/local/app:1.0`, ['--multi-arch', 'index-only']);
    expect(third.code, third.stderr).toBe(0);
    expect(sha256(await skopeoInspectRaw(`docker://${m.host}/local/app:1.0`, { creds: CREDS }))).toBe(src.digest);

    const { r: ok } = await pullTo(m, 'local/app:1.0', 's390x');
    expect(ok.code, ok.stderr).toBe(0);
    const { r: absent } = await pullTo(m, 'local/app:1.0', 'amd64');
    expect(absent.code).not.toBe(0);
    expect(absent.stderr).toContain('platform linux/amd64 is not mirrored here');
  });
});
