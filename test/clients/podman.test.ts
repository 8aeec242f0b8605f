// podman 4.3 (Debian) pulling through the mirror with its own storage and registries.conf:
// the mirror as a `[[registry.mirror]]` of a registry (path prefix = an alias the mirror knows),
// and the mirror as the registry's `location`, where the allow-list holds.
import { beforeAll, describe, expect, it } from 'vitest';
import { containersTool, type ContainersTool } from '../support/containers.js';
import { useFixture } from '../support/fixture.js';
import { pushMultiPlatformImage } from '../support/images.js';

const PLATFORMS = ['linux/amd64', 'linux/arm64', 'linux/s390x'];
// podman may not carry host:port in a mirror location's path: the mirror knows the registry
// by this alias, and the registries.conf prefix uses it too.
const ALIAS = 'registry.test';

const fx = useFixture({
  registry: true,
  images: async ({ registry }) => ({
    app: await pushMultiPlatformImage(registry.url, 'team/app', '2.0', { platforms: PLATFORMS }),
  }),
  mirror: ({ registry }) => ({ upstreams: [{ url: registry.url, aliases: [ALIAS] }] }),
});

let podman: ContainersTool;
beforeAll(async () => {
  podman = await containersTool('podman');
  fx.defer(() => podman.stop());
});

const child = (arch: string) => fx.images.app.children.find((c) => c.platform?.architecture === arch)!;
const registryHost = () => new URL(fx.registry.url).host;

/** Statuses the mirror answered for manifest requests naming this digest. */
const servedByMirror = (digest: string): number[] =>
  fx.mirror.logs
    .map((l) => JSON.parse(l) as { msg: string; path?: string; status?: number })
    .filter((l) => l.msg === 'request' && l.path?.endsWith(`/manifests/${digest}`))
    .map((l) => l.status!);

async function digestsOf(ref: string): Promise<{ digest: string; repoDigests: string[]; arch: string }> {
  const r = await podman.run(['image', 'inspect', '--format', '{{.Digest}} {{json .RepoDigests}} {{.Architecture}}', ref]);
  expect(r.code, r.stderr).toBe(0);
  const [digest, repoDigests, arch] = r.stdout.trim().split(' ');
  return { digest: digest!, repoDigests: JSON.parse(repoDigests!) as string[], arch: arch! };
}

describe('podman with the mirror as the registry\'s location', () => {
  beforeAll(async () => {
    await podman.configure([{ prefix: ALIAS, location: `${fx.mirror.host}/${ALIAS}`, insecure: true }]);
  });

  it('pulls the allowed platforms with upstream\'s index digest', async () => {
    for (const arch of ['amd64', 'arm64']) {
      const ref = `${ALIAS}/team/app:2.0`;
      const r = await podman.run(['pull', '--platform', `linux/${arch}`, ref]);
      expect(r.code, r.stderr).toBe(0);
      const got = await digestsOf(ref);
      expect(got.arch).toBe(arch);
      expect(got.repoDigests).toContain(`${ALIAS}/team/app@${fx.images.app.digest}`);
      expect(got.repoDigests).toContain(`${ALIAS}/team/app@${child(arch).digest}`);
      expect((await podman.run(['rmi', ref])).code).toBe(0);
    }
  });

  it('fails a non-mirrored platform with the mirror\'s message', async () => {
    const r = await podman.run(['pull', '--platform', 'linux/s390x', `${ALIAS}/team/app:2.0`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`Error: copying system image from manifest list: determining manifest MIME type for docker://${ALIAS}/team/app:2.0: reading manifest ${child('s390x').digest} in ${fx.mirror.host}/${ALIAS}/team/app: denied: platform linux/s390x is not mirrored here (this mirror carries linux/amd64, linux/arm64); ${child('s390x').digest} is the linux/s390x entry of index ${ALIAS}/team/app@${fx.images.app.digest}`);
  });

  it('fails a non-mirrored child pulled by its own digest too: there is nowhere to fall back to', async () => {
    const r = await podman.run(['pull', `${ALIAS}/team/app@${child('s390x').digest}`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`reading manifest ${child('s390x').digest} in ${fx.mirror.host}/${ALIAS}/team/app: denied: platform linux/s390x is not mirrored here`);
    expect(servedByMirror(child('s390x').digest).every((s) => s === 403)).toBe(true);
  });
});

describe('podman with the mirror as a [[registry.mirror]]', () => {
  beforeAll(async () => {
    await podman.configure([
      { prefix: ALIAS, location: registryHost(), insecure: true, mirrors: [{ location: `${fx.mirror.host}/${ALIAS}`, insecure: true }] },
    ]);
  });

  it('pulls an allowed platform through the mirror, not from the registry', async () => {
    const ref = `${ALIAS}/team/app:2.0`;
    const r = await podman.run(['pull', '--platform', 'linux/arm64', ref]);
    expect(r.code, r.stderr).toBe(0);
    const got = await digestsOf(ref);
    expect(got.arch).toBe('arm64');
    expect(got.repoDigests).toContain(`${ALIAS}/team/app@${fx.images.app.digest}`);
    expect(servedByMirror(child('arm64').digest)).toContain(200);
    expect((await podman.run(['rmi', ref])).code).toBe(0);
  });

  it('fails a non-mirrored platform of a tag with the mirror\'s message (the index came from the mirror)', async () => {
    const r = await podman.run(['pull', '--platform', 'linux/s390x', `${ALIAS}/team/app:2.0`]);
    expect(r.code).toBe(125);
    expect(r.stderr).toContain(`reading manifest ${child('s390x').digest} in ${fx.mirror.host}/${ALIAS}/team/app: denied: platform linux/s390x is not mirrored here`);
  });

  it('pulls a non-mirrored child by its own digest from the registry itself, silently', async () => {
    const ref = `${ALIAS}/team/app@${child('s390x').digest}`;
    const r = await podman.run(['pull', ref]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('not mirrored');
    // The mirror refused it; podman moved on to the registry's location.
    expect(servedByMirror(child('s390x').digest)).toContain(403);
    expect((await digestsOf(ref)).arch).toBe('s390x');
  });
});
