// The pieces of the signature policy on their own: repository patterns, key files, and the
// verification of cosign signatures and Sigstore bundles over a source held in memory.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import { loadPublicKey, type NamedKey } from '../../src/signatures/keys.js';
import { compilePattern } from '../../src/signatures/patterns.js';
import { SignaturePolicies } from '../../src/signatures/policy.js';
import { verifySubject, type SignatureSource } from '../../src/signatures/verify.js';
import type { ReferrerDescriptor } from '../../src/oci/referrers.js';
import {
  bundleReferrer,
  cosignSignature,
  newSigningKey,
  OCI_MANIFEST,
  schemeTag,
  sha256,
  sigstoreDsseBundle,
  sigstoreMessageBundle,
  writePublicKey,
  type Artifact,
  type KeyKind,
} from '../support/signing.js';

const dir = await mkdtemp(join(tmpdir(), 'sm-keys-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('repository patterns', () => {
  const cases: Array<[string, string, boolean]> = [
    ['ghcr.io/org/*', 'ghcr.io/org/app', true],
    ['ghcr.io/org/*', 'ghcr.io/org/team/app', false],
    ['ghcr.io/org/*', 'ghcr.io/other/app', false],
    ['ghcr.io/org/**', 'ghcr.io/org/team/app', true],
    ['ghcr.io/org/**', 'ghcr.io/org/app', true],
    ['ghcr.io/org/**', 'ghcr.io/org', false],
    ['ghcr.io/**/app', 'ghcr.io/a/b/app', true],
    ['ghcr.io/**/app', 'ghcr.io/a/b/web', false],
    ['docker.io/library/alpine', 'docker.io/library/alpine', true],
    ['docker.io/library/alpine', 'docker.io/library/alpine2', false],
    ['docker.io/library/app-*', 'docker.io/library/app-web', true],
    ['127.0.0.1:5000/sig/*', '127.0.0.1:5000/sig/x', true],
    ['ghcr.io/org.x/*', 'ghcr.io/orgax/app', false], // a dot is a dot
    ['**', 'anything/at/all', true],
    ['GHCR.io/Org/*', 'ghcr.io/org/app', true],
  ];
  it.each(cases)('%s ~ %s → %s', (pattern, repo, expected) => {
    expect(compilePattern(pattern)(repo)).toBe(expected);
  });

  it('the first matching policy decides; none matching: not checked', async () => {
    const a = await writePublicKey(dir, 'a.pub', newSigningKey().publicKey);
    const b = await writePublicKey(dir, 'b.pub', newSigningKey().publicKey);
    const config = validateConfig({
      upstreams: [{ url: 'http://127.0.0.1:9' }],
      signatures: {
        policies: [
          { repositories: ['ghcr.io/org/legacy'], keys: [a], mode: 'warn' },
          { repositories: ['ghcr.io/org/**'], keys: [b] },
        ],
      },
    });
    const policies = SignaturePolicies.load(config.signatures);
    expect(policies.for('ghcr.io/org/legacy')).toMatchObject({ mode: 'warn', keys: [{ name: a }] });
    expect(policies.for('ghcr.io/org/app')).toMatchObject({ mode: 'enforce', keys: [{ name: b }] });
    expect(policies.for('docker.io/library/alpine')).toBeUndefined();
  });

  it('a bad pattern or a policy without keys is a config error naming the key', () => {
    expect(() => validateConfig({ upstreams: [{ url: 'http://127.0.0.1:9' }], signatures: { policies: [{ repositories: ['ghcr.io/org/?'], keys: ['k.pub'] }] } })).toThrow(
      /signatures\.policies\.0\.repositories\.0/,
    );
    expect(() => validateConfig({ upstreams: [{ url: 'http://127.0.0.1:9' }], signatures: { policies: [{ repositories: ['x/*'], keys: [], mode: 'enforce' }] } })).toThrow(
      /signatures\.policies\.0\.keys/,
    );
  });
});

describe('key files', () => {
  it.each(['p256', 'ed25519', 'rsa'] as KeyKind[])('loads a %s public key in PEM', async (kind) => {
    const path = await writePublicKey(dir, `${kind}.pub`, newSigningKey(kind).publicKey);
    expect(loadPublicKey(path).name).toBe(path);
  });

  it.each([
    ['garbage.pub', 'not a key at all\n', /garbage\.pub is not a PEM public key/],
    ['broken.pub', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n', /broken\.pub is not a valid PEM public key/],
    ['private.key', newSigningKey().privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, /private\.key is a private key/],
  ])('refuses %s, naming it', async (name, content, message) => {
    await writeFile(join(dir, name), content);
    expect(() => loadPublicKey(join(dir, name))).toThrow(message);
  });

  it('refuses a missing file and a short RSA key, naming them', async () => {
    expect(() => loadPublicKey(join(dir, 'absent.pub'))).toThrow(/absent\.pub: cannot read it \(ENOENT\)/);
    const weak = await import('node:crypto').then((c) => c.generateKeyPairSync('rsa', { modulusLength: 1024 }));
    const path = await writePublicKey(dir, 'weak.pub', weak.publicKey);
    expect(() => loadPublicKey(path)).toThrow(/weak\.pub is a 1024-bit RSA key/);
  });
});

/** An in-memory registry view: manifests and blobs by digest, the .sig tag, referrers by subject. */
class MemorySource implements SignatureSource {
  readonly content = new Map<string, Buffer>();
  readonly tags = new Map<string, string>();
  readonly refs = new Map<string, ReferrerDescriptor[]>();

  add(a: Artifact, opts: { tag?: string; subject?: string } = {}): void {
    this.content.set(a.digest, a.bytes);
    for (const b of a.blobs) this.content.set(sha256(b), b);
    if (opts.tag) this.tags.set(opts.tag, a.digest);
    if (opts.subject) this.refs.set(opts.subject, [...(this.refs.get(opts.subject) ?? []), a.descriptor]);
  }
  async signatureTag(subject: string) {
    const d = this.tags.get(schemeTag(subject, 'sig'));
    return d ? this.content.get(d) : undefined;
  }
  async referrers(subject: string) {
    return this.refs.get(subject) ?? [];
  }
  async manifest(digest: string) {
    const b = this.content.get(digest);
    if (!b) throw new Error(`${digest} not found`);
    return b;
  }
  async blob(digest: string) {
    return this.manifest(digest);
  }
}

describe('verification', () => {
  const image = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: {}, layers: [] }));
  const subject = sha256(image);
  const descriptor = { mediaType: OCI_MANIFEST, digest: subject, size: image.length };
  const keyed = (kind: KeyKind = 'p256') => {
    const k = newSigningKey(kind);
    return { ...k, named: { name: `${kind}.pub`, key: k.publicKey } as NamedKey };
  };
  const source = (fill: (s: MemorySource) => void) => {
    const s = new MemorySource();
    s.content.set(subject, image);
    fill(s);
    return s;
  };

  it.each(['p256', 'ed25519', 'rsa'] as KeyKind[])('a cosign signature by a %s key verifies', async (kind) => {
    const k = keyed(kind);
    const s = source((s) => s.add(cosignSignature('r/x', subject, k.privateKey), { tag: schemeTag(subject, 'sig') }));
    expect(await verifySubject(s, subject, [keyed().named, k.named])).toMatchObject({ status: 'verified', signer: `${kind}.pub` });
  });

  it('unsigned, over another digest, by another key: each says so', async () => {
    const k = keyed();
    expect(await verifySubject(source(() => {}), subject, [k.named])).toEqual({
      status: 'unsigned',
      reason: `no ${schemeTag(subject, 'sig')} tag and no signature referrer`,
    });
    const other = sha256(Buffer.from('another image'));
    const wrong = await verifySubject(source((s) => s.add(cosignSignature('r/x', other, k.privateKey), { tag: schemeTag(subject, 'sig') })), subject, [k.named]);
    expect(wrong).toMatchObject({ status: 'failed', reason: `the signature under ${schemeTag(subject, 'sig')} is over ${other}, not ${subject}` });
    const foreign = await verifySubject(source((s) => s.add(cosignSignature('r/x', subject, keyed().privateKey), { tag: schemeTag(subject, 'sig') })), subject, [k.named]);
    expect(foreign).toMatchObject({ status: 'failed', reason: `the signature under ${schemeTag(subject, 'sig')} does not verify` });
  });

  it('garbage in the annotation or the payload, and a payload too large, fail without a throw', async () => {
    const k = keyed();
    const tag = schemeTag(subject, 'sig');
    const garbage = await verifySubject(source((s) => s.add(cosignSignature('r/x', subject, k.privateKey, { signature: '%%% not base64 %%%' }), { tag })), subject, [k.named]);
    expect(garbage).toMatchObject({ status: 'failed' });
    expect(garbage.reason).toContain('its signature annotation is not a base64 signature');
    const notJson = await verifySubject(source((s) => s.add(cosignSignature('r/x', subject, k.privateKey, { payload: Buffer.from('\u0000\u0001junk') }), { tag })), subject, [k.named]);
    expect(notJson.reason).toContain('the payload is not JSON');
    const huge = await verifySubject(source((s) => s.add(cosignSignature('r/x', subject, k.privateKey, { payload: Buffer.alloc(100_000, 0x20) }), { tag })), subject, [k.named]);
    expect(huge.reason).toMatch(/a 100000-byte payload is too large for a signature/);
  });

  it('a signature manifest with a thousand garbage layers gives a short reason', async () => {
    const k = keyed();
    const sig = cosignSignature('r/x', subject, k.privateKey);
    const m = JSON.parse(sig.bytes.toString()) as { layers: Array<Record<string, unknown>> };
    m.layers = Array.from({ length: 1000 }, (_, i) => ({ ...m.layers[0], digest: sha256(Buffer.from(String(i))), annotations: { 'dev.cosignproject.cosign/signature': '@' } }));
    const bytes = Buffer.from(JSON.stringify(m));
    const s = source((s) => {
      s.content.set(sha256(bytes), bytes);
      s.tags.set(schemeTag(subject, 'sig'), sha256(bytes));
    });
    const v = await verifySubject(s, subject, [k.named]);
    expect(v.status).toBe('failed');
    expect(v.reason.length).toBeLessThanOrEqual(1000);
    expect(v.reason).toContain('its signature annotation is not a base64 signature');
  });

  it('a Sigstore bundle (DSSE, as cosign 3 signs; or a message signature over the manifest) verifies with the key', async () => {
    const k = keyed();
    const dsse = bundleReferrer(descriptor, sigstoreDsseBundle(subject, k.privateKey));
    expect(await verifySubject(source((s) => s.add(dsse, { subject })), subject, [k.named])).toMatchObject({ status: 'verified', reason: `Sigstore bundle ${dsse.digest} by p256.pub` });
    const message = bundleReferrer(descriptor, sigstoreMessageBundle(image, k.privateKey));
    expect(await verifySubject(source((s) => s.add(message, { subject })), subject, [k.named])).toMatchObject({ status: 'verified' });
  });

  it('a bundle over another digest, by another key, an attestation, or not a bundle at all: failed, with the reason', async () => {
    const k = keyed();
    const other = sha256(Buffer.from('another image'));
    const cases: Array<[Buffer, RegExp]> = [
      [sigstoreDsseBundle(other, k.privateKey), new RegExp(`is over ${other}, not ${subject}`)],
      [sigstoreDsseBundle(subject, keyed().privateKey), /its signature does not verify/],
      [sigstoreDsseBundle(subject, k.privateKey, 'https://slsa.dev/provenance/v1'), /it is an attestation \(https:\/\/slsa\.dev\/provenance\/v1\), not a signature/],
      [sigstoreMessageBundle(Buffer.from('other bytes'), k.privateKey), /is over sha256:[0-9a-f]{64}, not/],
      [Buffer.from('{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}'), /not a valid Sigstore bundle/],
      [Buffer.from('\u0000garbage'), /not a valid Sigstore bundle/],
    ];
    for (const [bundle, reason] of cases) {
      const v = await verifySubject(source((s) => s.add(bundleReferrer(descriptor, bundle), { subject })), subject, [k.named]);
      expect(v.status).toBe('failed');
      expect(v.reason).toMatch(reason);
    }
  });

  it('a signature that cannot be read is a failure not to be kept (transient)', async () => {
    const k = keyed();
    const s = source((s) => s.add(cosignSignature('r/x', subject, k.privateKey), { tag: schemeTag(subject, 'sig') }));
    s.blob = async () => {
      throw new Error('upstream unreachable');
    };
    expect(await verifySubject(s, subject, [k.named])).toMatchObject({ status: 'failed', transient: true });
  });
});
