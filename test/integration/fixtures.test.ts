// Smoke test for the real-upstream fixtures: a genuine distribution 2.8 registry (plain,
// htpasswd and token auth), the in-process token server and the HTTP image pusher.
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exec } from '../support/exec.js';
import {
  fetchBlob,
  fetchManifest,
  pushMultiPlatformImage,
  pushNestedIndex,
  pushSinglePlatformImage,
  sha256,
  type PushedIndex,
} from '../support/images.js';
import { startRegistry, type BasicAuth, type RegistryHandle } from '../support/registry.js';
import { startTokenServer, type TokenServerHandle } from '../support/token-server.js';

const alice: BasicAuth = { username: 'alice', password: 'wonderland' };

const tempDirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fixtures-test-'));
  tempDirs.push(dir);
  return dir;
}
afterAll(async () => {
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function expectServedExactly(registry: RegistryHandle, index: PushedIndex): Promise<void> {
  const got = await fetchManifest(registry.url, index.repo, index.tag);
  expect(got.bytes.equals(index.bytes)).toBe(true);
  expect(got.headerDigest).toBe(index.digest);
  expect(got.mediaType).toBe(index.mediaType);
  for (const child of index.children) {
    const c = await fetchManifest(registry.url, index.repo, child.digest);
    expect(c.bytes.equals(child.bytes)).toBe(true);
    expect(c.headerDigest).toBe(child.digest);
  }
}

describe('plain registry', () => {
  let registry: RegistryHandle;
  beforeAll(async () => {
    registry = await startRegistry();
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it('serves a 7-platform OCI index with attestations byte-exact, also to skopeo', async () => {
    const index = await pushMultiPlatformImage(registry.url, 'fixtures/oci', 'v1', { attestations: true, layersPerImage: 2 });
    expect(index.children).toHaveLength(14);
    await expectServedExactly(registry, index);

    const layer = index.children[0]!.layers[0]!;
    expect(sha256(await fetchBlob(registry.url, 'fixtures/oci', layer.digest))).toBe(layer.digest);

    const inspect = await exec('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/fixtures/oci:v1`]);
    expect(inspect.stderr).toBe('');
    expect(inspect.stdoutBytes.equals(index.bytes)).toBe(true);

    const dir = await tempDir();
    const copy = await exec('skopeo', [
      'copy', '--override-arch', 'arm64', '--src-tls-verify=false',
      `docker://${registry.host}/fixtures/oci:v1`, `dir:${dir}`,
    ]);
    expect(copy.code, copy.stderr).toBe(0);
    const arm64 = index.children.find((c) => c.platform?.architecture === 'arm64')!;
    expect((await readFile(join(dir, 'manifest.json'))).equals(arm64.bytes)).toBe(true);
    expect(await readdir(dir)).toEqual(expect.arrayContaining(arm64.layers.map((l) => l.digest.slice('sha256:'.length))));
  });

  it('serves docker-format, odd-bytes and nested indexes byte-exact', async () => {
    const [docker, odd, oddOci] = await Promise.all([
      pushMultiPlatformImage(registry.url, 'fixtures/docker', 'v1', { format: 'docker', platforms: ['linux/amd64', 'linux/arm/v7'] }),
      pushMultiPlatformImage(registry.url, 'fixtures/odd', 'v1', { format: 'docker', oddBytes: true }),
      pushMultiPlatformImage(registry.url, 'fixtures/odd-oci', 'v1', { oddBytes: true, attestations: true, platforms: ['linux/arm64/v8'] }),
    ]);
    expect(docker.mediaType).toBe('application/vnd.docker.distribution.manifest.list.v2+json');
    expect(odd.bytes.toString()).toContain('application\\/vnd.docker.distribution.manifest.v2+json');
    expect(odd.bytes.toString()).not.toMatch(/\n$/);
    for (const index of [docker, odd, oddOci]) await expectServedExactly(registry, index);

    const skopeoOdd = await exec('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/fixtures/odd:v1`]);
    expect(skopeoOdd.stdoutBytes.equals(odd.bytes)).toBe(true);

    const [a, b] = await Promise.all([
      pushMultiPlatformImage(registry.url, 'fixtures/nested', 'a', { platforms: ['linux/amd64'] }),
      pushMultiPlatformImage(registry.url, 'fixtures/nested', 'b', { platforms: ['linux/arm64/v8', 'linux/s390x'] }),
    ]);
    const single = await pushSinglePlatformImage(registry.url, 'fixtures/nested', 'single', { platform: 'linux/ppc64le' });
    const nested = await pushNestedIndex(registry.url, 'fixtures/nested', 'all', [a, b], { extraChildren: [single] });
    const got = await fetchManifest(registry.url, 'fixtures/nested', 'all');
    expect(got.bytes.equals(nested.bytes)).toBe(true);
    expect(got.headerDigest).toBe(nested.digest);
    const listed = (JSON.parse(got.bytes.toString()) as { manifests: Array<{ mediaType: string }> }).manifests;
    expect(listed.map((m) => m.mediaType)).toEqual([a.mediaType, b.mediaType, single.mediaType]);
    expect(nested.children).toHaveLength(4);
  });
});

describe('basic-auth registry', () => {
  let registry: RegistryHandle;
  beforeAll(async () => {
    registry = await startRegistry({ auth: { basic: [alice] } });
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it('requires credentials, and accepts push and pull with them', async () => {
    const anonymous = await fetch(`${registry.url}/v2/`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toMatch(/^Basic /);
    const authorization = `Basic ${Buffer.from(`${alice.username}:${alice.password}`).toString('base64')}`;
    expect((await fetch(`${registry.url}/v2/`, { headers: { authorization } })).status).toBe(200);

    const index = await pushMultiPlatformImage(registry.url, 'private/app', 'v1', { platforms: ['linux/amd64'], auth: alice });
    const got = await fetchManifest(registry.url, 'private/app', 'v1', alice);
    expect(got.bytes.equals(index.bytes)).toBe(true);
    expect((await fetch(`${registry.url}/v2/private/app/manifests/v1`)).status).toBe(401);
  });
});

describe('token-auth registry', () => {
  let tokens: TokenServerHandle;
  let registry: RegistryHandle;
  beforeAll(async () => {
    tokens = await startTokenServer({ users: { [alice.username]: alice.password }, anonymousPull: false });
    registry = await startRegistry({ auth: { token: tokens } });
  });
  afterAll(async () => {
    await registry?.stop();
    await tokens?.stop();
  });

  it('runs the bearer token flow for the pusher and for skopeo', async () => {
    const challenge = await fetch(`${registry.url}/v2/`);
    expect(challenge.status).toBe(401);
    expect(challenge.headers.get('www-authenticate')).toContain(`realm="${tokens.url}"`);

    const index = await pushMultiPlatformImage(registry.url, 'team/app', 'v1', { platforms: ['linux/amd64', 'linux/arm64/v8'], auth: alice });
    expect(tokens.requests.some((r) => r.user === 'alice' && r.scope === 'repository:team/app:pull,push')).toBe(true);

    tokens.requests.length = 0;
    const dir = await tempDir();
    const copy = await exec('skopeo', [
      'copy', '--override-arch', 'arm64', '--src-tls-verify=false', '--src-creds', `${alice.username}:${alice.password}`,
      `docker://${registry.host}/team/app:v1`, `dir:${dir}`,
    ]);
    expect(copy.code, copy.stderr).toBe(0);
    const arm64 = index.children.find((c) => c.platform?.architecture === 'arm64')!;
    expect((await readFile(join(dir, 'manifest.json'))).equals(arm64.bytes)).toBe(true);
    expect(tokens.requests).toContainEqual(
      expect.objectContaining({ scope: 'repository:team/app:pull', user: 'alice', withCredentials: true, status: 200 }),
    );

    // Anonymous pull is disabled: an anonymous token grants nothing, so the registry refuses.
    const anon = await exec('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/team/app:v1`]);
    expect(anon.code).not.toBe(0);
  });
});
