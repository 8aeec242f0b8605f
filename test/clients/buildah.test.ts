// buildah 1.28 (Debian) taking base images through the mirror, the mirror as the registry's
// `location` in its registries.conf: `buildah pull` and `buildah from` (what a build's FROM does).
import { beforeAll, describe, expect, it } from 'vitest';
import { containersTool, type ContainersTool } from '../support/containers.js';
import { useFixture } from '../support/fixture.js';
import { pushMultiPlatformImage } from '../support/images.js';

const ALIAS = 'registry.test';

const fx = useFixture({
  registry: true,
  images: async ({ registry }) => ({
    base: await pushMultiPlatformImage(registry.url, 'team/base', '1.0', { platforms: ['linux/amd64', 'linux/arm64', 'linux/s390x'] }),
  }),
  mirror: ({ registry }) => ({ upstreams: [{ url: registry.url, aliases: [ALIAS] }] }),
});

let buildah: ContainersTool;
beforeAll(async () => {
  buildah = await containersTool('buildah');
  fx.defer(() => buildah.stop());
  await buildah.configure([{ prefix: ALIAS, location: `${fx.mirror.host}/${ALIAS}`, insecure: true }]);
});

const REF = `${ALIAS}/team/base:1.0`;
const child = (arch: string) => fx.images.base.children.find((c) => c.platform?.architecture === arch)!;

describe('buildah with the mirror as the registry\'s location', () => {
  it('pulls an allowed platform: the image is upstream\'s child of upstream\'s index', async () => {
    const r = await buildah.run(['pull', '--platform', 'linux/arm64', REF]);
    expect(r.code, r.stderr).toBe(0);
    const inspect = await buildah.run(['inspect', '--type', 'image', '--format', '{{.FromImageDigest}} {{.Docker.Architecture}}', REF]);
    expect(inspect.code, inspect.stderr).toBe(0);
    expect(inspect.stdout.trim()).toBe(`${child('arm64').digest} arm64`);
    const digests = await buildah.run(['images', '--digests', '--format', '{{.Digest}}', REF]);
    expect(digests.stdout.trim(), 'listed by the index digest it was pulled by').toBe(fx.images.base.digest);
  });

  it('`buildah from` another allowed platform makes a working container of it', async () => {
    const r = await buildah.run(['from', '--pull=always', '--platform', 'linux/amd64', '--name', 'w-amd64', REF]);
    expect(r.code, r.stderr).toBe(0);
    const inspect = await buildah.run(['inspect', '--format', '{{.FromImageDigest}}', 'w-amd64']);
    expect(inspect.stdout.trim()).toBe(child('amd64').digest);
    expect((await buildah.run(['rm', 'w-amd64'])).code).toBe(0);
  });

  it('fails a non-mirrored platform with the mirror\'s message', async () => {
    const r = await buildah.run(['from', '--pull=always', '--platform', 'linux/s390x', '--name', 'w-s390x', REF]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(
      `reading manifest ${child('s390x').digest} in ${fx.mirror.host}/${ALIAS}/team/base: denied: platform linux/s390x is not mirrored here (this mirror carries linux/amd64, linux/arm64)`,
    );
  });
});
