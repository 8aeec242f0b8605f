// Keyless signatures end to end: Sigstore bundle referrers whose certificate a test Fulcio-like CA
// issued (made with openssl, timed by a test TSA), verified offline against the trusted_root.json
// the policy names. Pulled through the mirror with skopeo under `enforce`: the image signed by the
// configured identity pulls (and one signed with the policy's key too), one signed by another
// identity or under a CA not in the trusted root is refused with a 403 DENIED that says why.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { useFixture } from '../support/fixture.js';
import { pushMultiPlatformImage, putManifest, type PushedIndex } from '../support/images.js';
import { keylessAuthority, keylessBundle } from '../support/keyless.js';
import { bundleReferrer, fallbackIndex, newSigningKey, OCI_INDEX, pushArtifact, schemeTag, sigstoreDsseBundle, writePublicKey } from '../support/signing.js';
import { skopeoCopyToDir } from '../support/skopeo.js';

const ALIAS = 'keyless.example';
const DEV = { subject: 'dev@example.com', issuer: 'https://accounts.example.com' };
const dir = await mkdtemp(join(tmpdir(), 'sm-keyless-'));
afterAll(() => rm(dir, { recursive: true, force: true }));
const trusted = keylessAuthority(dir, 'trusted');
const foreign = keylessAuthority(dir, 'foreign');
const signer = newSigningKey();
const keyPath = await writePublicKey(dir, 'org.pub', signer.publicKey);

const NAMES = ['keyless', 'keyed', 'eve', 'foreign'] as const;
type Name = (typeof NAMES)[number];
const repo = (n: Name) => `kl/${n}`;
const IDENTITIES = `${DEV.subject} (${DEV.issuer})`;

/** The bundle each image is signed with: keylessly by the configured identity, with the key, by another identity, under a foreign CA. */
function bundleFor(n: Name, digest: string): Buffer {
  if (n === 'keyed') return sigstoreDsseBundle(digest, signer.privateKey);
  if (n === 'eve') return keylessBundle(trusted, digest, { ...DEV, subject: 'eve@example.com' });
  return keylessBundle(trusted, digest, DEV, n === 'foreign' ? { issuedBy: foreign } : {});
}

describe('keyless signature policy', () => {
  const fx = useFixture({
    registry: true,
    images: async ({ registry }): Promise<Record<Name, PushedIndex>> => {
      const images = {} as Record<Name, PushedIndex>;
      for (const n of NAMES) {
        const image = (images[n] = await pushMultiPlatformImage(registry.url, repo(n), '1.0', { platforms: ['linux/amd64'] }));
        // cosign 3: a bundle referrer; docker-registry has no referrers API, so the fallback tag lists it.
        const bundle = bundleReferrer({ mediaType: image.mediaType, digest: image.digest, size: image.bytes.length }, bundleFor(n, image.digest));
        await pushArtifact(registry.url, repo(n), bundle);
        await putManifest(registry.url, repo(n), schemeTag(image.digest), fallbackIndex([bundle.descriptor]), OCI_INDEX);
      }
      return images;
    },
    mirror: ({ registry }) => ({
      upstreams: [{ url: registry.url, aliases: [ALIAS] }],
      signatures: { policies: [{ repositories: [`${ALIAS}/kl/*`], keys: [keyPath], trustedRoot: trusted.trustedRoot, identities: [DEV], mode: 'enforce' }] },
    }),
  });

  const pull = async (n: Name) => skopeoCopyToDir(`docker://${fx.mirror.host}/${ALIAS}/${repo(n)}:1.0`, await fx.tempDir('pulled-'), { os: 'linux', arch: 'amd64' });

  it('skopeo pulls the image signed keylessly by the configured identity, and the key-signed one under the same policy', async () => {
    for (const n of ['keyless', 'keyed'] as const) {
      const r = await pull(n);
      expect(r.code, `${n}: ${r.stderr}`).toBe(0);
    }
  });

  it('another identity, or a CA not in the trusted root: refused, 403 DENIED saying why', async () => {
    const prefix = (n: Name) => `${ALIAS}/${repo(n)}:1.0 (${fx.images[n].digest}) has no signature by ${keyPath} or ${IDENTITIES} under ${trusted.trustedRoot}: the Sigstore bundle sha256:`;
    const reasons: Record<'eve' | 'foreign', string> = {
      eve: `its certificate is for eve@example.com (issuer ${DEV.issuer}), not ${IDENTITIES}`,
      foreign: `it does not verify with ${trusted.trustedRoot}: its certificate is not issued by a certificate authority it names`,
    };
    for (const n of ['eve', 'foreign'] as const) {
      const r = await pull(n);
      expect(r.code, n).not.toBe(0);
      expect(r.stderr).toContain(prefix(n));
      expect(r.stderr).toContain(reasons[n]);
      const res = await fetch(`${fx.mirror.url}/v2/${ALIAS}/${repo(n)}/manifests/1.0`, { headers: { accept: OCI_INDEX } });
      expect(res.status).toBe(403);
      const body = (await res.json()) as { errors: Array<{ code: string; message: string }> };
      expect(body.errors[0]!.code).toBe('DENIED');
      expect(body.errors[0]!.message).toContain(reasons[n]);
    }
  });

  it('a missing or malformed trustedRoot stops start-up, naming the file', async () => {
    const broken = join(dir, 'broken-root.json');
    await writeFile(broken, '{"certificateAuthorities": "no"}');
    for (const file of [join(dir, 'absent-root.json'), broken]) {
      const policies = [{ repositories: ['**'], trustedRoot: file, identities: [DEV] }];
      await expect(fx.startMirror({ upstreams: [{ url: fx.registry.url }], signatures: { policies } })).rejects.toThrow(`trusted root ${file}`);
    }
  });
});
