// Keyless Sigstore bundles on their own: identity matching, the policy's trustedRoot/identities
// config and file errors, and bundles from a test CA and TSA (made with openssl) checked offline.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import { identityMatches, loadKeylessTrust } from '../../src/signatures/keyless.js';
import { SignaturePolicies } from '../../src/signatures/policy.js';
import { checkBundle } from '../../src/signatures/sigstore-bundle.js';
import { keylessAuthority, keylessBundle } from '../support/keyless.js';
import { newSigningKey, sha256, sigstoreDsseBundle, writePublicKey } from '../support/signing.js';

const dir = await mkdtemp(join(tmpdir(), 'sm-keyless-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

const DEV = { subject: 'dev@example.com', issuer: 'https://accounts.example.com' };
const UPSTREAMS = [{ url: 'http://127.0.0.1:9' }];

describe('identity matching', () => {
  const cases: Array<[object, string | undefined, string | undefined, boolean]> = [
    [DEV, 'dev@example.com', DEV.issuer, true],
    [DEV, 'dev@example.com', 'https://accounts.example.com.evil', false],
    [DEV, 'evil-dev@example.com', DEV.issuer, false], // exact, not a substring or an unanchored pattern
    [DEV, 'dev@example.com.evil', DEV.issuer, false],
    [DEV, 'dev@exampleXcom', DEV.issuer, false], // a dot is a dot
    [DEV, undefined, DEV.issuer, false],
    [{ subjectRegExp: '.*@example\\.com', issuer: DEV.issuer }, 'ops@example.com', DEV.issuer, true],
    [{ subjectRegExp: '.*@example\\.com', issuer: DEV.issuer }, 'ops@example.com.evil', DEV.issuer, false], // anchored
    [{ subjectRegExp: 'a|b@example\\.com', issuer: DEV.issuer }, 'a-and-more', DEV.issuer, false], // alternation anchored as a whole
  ];
  it.each(cases)('%j ~ %s (%s) → %s', (identity, subject, issuer, expected) => {
    expect(identityMatches(identity as typeof DEV, subject, issuer)).toBe(expected);
  });
});

describe('config', () => {
  const policy = (p: object) => () => validateConfig({ upstreams: UPSTREAMS, signatures: { policies: [{ repositories: ['x/*'], ...p }] } });

  it('a policy needs keys or a trustedRoot; a trustedRoot needs identities and identities a trustedRoot', () => {
    expect(policy({})).toThrow(/signatures\.policies\.0\.keys.*name keys, or a trustedRoot/s);
    expect(policy({ trustedRoot: 'root.json' })).toThrow(/signatures\.policies\.0\.identities.*needs identities/s);
    expect(policy({ keys: ['k.pub'], identities: [DEV] })).toThrow(/signatures\.policies\.0\.trustedRoot.*need a trustedRoot/s);
    expect(policy({ trustedRoot: 'root.json', identities: [{ issuer: DEV.issuer }] })).toThrow(/subject or subjectRegExp/);
    expect(policy({ trustedRoot: 'root.json', identities: [{ ...DEV, subjectRegExp: '.*' }] })).toThrow(/subject or subjectRegExp/);
    expect(policy({ trustedRoot: 'root.json', identities: [{ subjectRegExp: '(', issuer: DEV.issuer }] })).toThrow(/not a valid regular expression/);
    expect(policy({ trustedRoot: 'root.json', identities: [DEV] })).not.toThrow();
  });

  it('a missing or malformed trusted root stops loading, naming the file', async () => {
    const load = (path: string) => () => loadKeylessTrust(path, [DEV]);
    expect(load(join(dir, 'absent.json'))).toThrow(/trusted root .*absent\.json: cannot read it \(ENOENT\)/);
    await writeFile(join(dir, 'garbage.json'), 'not json');
    expect(load(join(dir, 'garbage.json'))).toThrow(/trusted root .*garbage\.json is not a Sigstore TrustedRoot JSON/);
    const empty = { mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1', tlogs: [], ctlogs: [], certificateAuthorities: [], timestampAuthorities: [] };
    await writeFile(join(dir, 'empty.json'), JSON.stringify(empty));
    expect(load(join(dir, 'empty.json'))).toThrow(/empty\.json names no certificate authority/);
    const badCert = { ...empty, certificateAuthorities: [{ certChain: { certificates: [{ rawBytes: Buffer.from('not DER').toString('base64') }] } }] };
    await writeFile(join(dir, 'bad-cert.json'), JSON.stringify(badCert));
    expect(load(join(dir, 'bad-cert.json'))).toThrow(/bad-cert\.json is not a Sigstore TrustedRoot JSON/);
  });
});

describe('keyless bundles', () => {
  const a = keylessAuthority(dir, 'good');
  const stranger = keylessAuthority(dir, 'stranger');
  const subject = sha256(Buffer.from('an image manifest'));
  const trust = loadKeylessTrust(a.trustedRoot, [DEV, { subjectRegExp: 'ci-.*@example\\.com', issuer: 'https://ci.example.com' }]);
  const check = (bundle: Buffer, keyless = trust) => checkBundle(bundle, subject, { keys: [], keyless }, async () => Buffer.alloc(0));

  it('a certificate from the trusted CA, for a configured identity, timed by the trusted TSA, verifies', async () => {
    expect(await check(keylessBundle(a, subject, DEV))).toEqual({ ok: true, signer: 'dev@example.com (https://accounts.example.com)' });
    expect(await check(keylessBundle(a, subject, { subject: 'ci-7@example.com', issuer: 'https://ci.example.com', legacyIssuer: true }))).toMatchObject({ ok: true });
  });

  it('another identity, another issuer, a CA not in the root, another digest: refused, saying why', async () => {
    expect(await check(keylessBundle(a, subject, { ...DEV, subject: 'eve@example.com' }))).toEqual({
      ok: false,
      reason: 'its certificate is for eve@example.com (issuer https://accounts.example.com), not dev@example.com (https://accounts.example.com) or /ci-.*@example\\.com/ (https://ci.example.com)',
    });
    expect(await check(keylessBundle(a, subject, { ...DEV, issuer: 'https://evil.example.com' }))).toMatchObject({ ok: false, reason: expect.stringContaining('(issuer https://evil.example.com), not') });
    expect(await check(keylessBundle(stranger, subject, DEV))).toMatchObject({ ok: false, reason: expect.stringContaining('its RFC 3161 timestamp is not by a timestamp authority it names') });
    const other = sha256(Buffer.from('another image'));
    expect(await check(keylessBundle(a, other, DEV))).toMatchObject({ ok: false, reason: `it is over ${other}, not ${subject}` });
  });

  it('a certificate from a CA not in the root, timed by a trusted TSA: not issued by a CA it names', async () => {
    // Timed by the trusted TSA: only the chain is wrong.
    expect(await check(keylessBundle(a, subject, DEV, { issuedBy: stranger }))).toMatchObject({
      ok: false,
      reason: expect.stringContaining('its certificate is not issued by a certificate authority it names'),
    });
  });

  it('without its timestamp a certificate cannot be checked; a keyed bundle needs keys; a keyless one a trusted root', async () => {
    const bare = JSON.parse(keylessBundle(a, subject, DEV).toString()) as { verificationMaterial: Record<string, unknown> };
    delete bare.verificationMaterial.timestampVerificationData;
    expect(await check(Buffer.from(JSON.stringify(bare)))).toMatchObject({ ok: false, reason: expect.stringContaining('no timestamp it carries is by an authority or log of') });
    expect(await checkBundle(keylessBundle(a, subject, DEV), subject, { keys: [] }, async () => Buffer.alloc(0))).toMatchObject({
      ok: false,
      reason: expect.stringContaining('the policy names no trustedRoot'),
    });
    expect(await check(sigstoreDsseBundle(subject, newSigningKey().privateKey))).toMatchObject({ ok: false, reason: 'it is signed with a key, and the policy names none' });
    const garbage = JSON.parse(keylessBundle(a, subject, DEV).toString()) as { verificationMaterial: { certificate: { rawBytes: string } } };
    garbage.verificationMaterial.certificate.rawBytes = Buffer.from('not a certificate').toString('base64');
    expect(await check(Buffer.from(JSON.stringify(garbage)))).toMatchObject({ ok: false, reason: expect.stringContaining('its certificate or timestamps cannot be parsed') });
  });

  it('a transparency log in the root: a logged entry times the certificate; every entry must verify; without logs in the root, log times do not count', async () => {
    const logged = keylessAuthority(dir, 'logged', { log: true });
    const otherLog = keylessAuthority(dir, 'other-log', { log: true });
    const withLog = loadKeylessTrust(logged.trustedRoot, [DEV]);
    expect(await check(keylessBundle(logged, subject, DEV, { timestamp: false, loggedBy: logged }), withLog)).toMatchObject({ ok: true });
    // A later integrated time than the log promised.
    const forged = JSON.parse(keylessBundle(logged, subject, DEV, { timestamp: false, loggedBy: logged }).toString()) as { verificationMaterial: { tlogEntries: Array<{ integratedTime: string }> } };
    forged.verificationMaterial.tlogEntries[0]!.integratedTime = String(Number(forged.verificationMaterial.tlogEntries[0]!.integratedTime) + 3600);
    expect(await check(Buffer.from(JSON.stringify(forged)), withLog)).toMatchObject({ ok: false, reason: expect.stringContaining('its transparency-log entry does not verify with a log it names (inclusion promise could not be verified)') });
    // Timed by the TSA, but also in a log the root does not name.
    expect(await check(keylessBundle(logged, subject, DEV, { loggedBy: otherLog }), withLog)).toMatchObject({ ok: false, reason: expect.stringContaining(`does not verify with ${logged.trustedRoot}: its transparency-log entry does not verify`) });
    // The root of `a` names no log: the entry's time is not trusted, nothing else times the certificate.
    expect(await check(keylessBundle(a, subject, DEV, { timestamp: false, loggedBy: logged }))).toMatchObject({ ok: false, reason: expect.stringContaining('no timestamp it carries') });
    expect(await check(keylessBundle(a, subject, DEV, { loggedBy: logged }))).toMatchObject({ ok: true });
  });

  it('keys and keyless in one policy: the fingerprint names both, and either verifies', async () => {
    const k = newSigningKey();
    const keyPath = await writePublicKey(dir, 'both.pub', k.publicKey);
    const config = validateConfig({ upstreams: UPSTREAMS, signatures: { policies: [{ repositories: ['x/*'], keys: [keyPath], trustedRoot: a.trustedRoot, identities: [DEV] }] } });
    const policy = SignaturePolicies.load(config.signatures).for('x/app')!;
    const signers = { keys: policy.keys, keyless: policy.keyless };
    expect(await checkBundle(keylessBundle(a, subject, DEV), subject, signers, async () => Buffer.alloc(0))).toMatchObject({ ok: true });
    expect(await checkBundle(sigstoreDsseBundle(subject, k.privateKey), subject, signers, async () => Buffer.alloc(0))).toEqual({ ok: true, signer: keyPath });
    const keysOnly = SignaturePolicies.load(validateConfig({ upstreams: UPSTREAMS, signatures: { policies: [{ repositories: ['x/*'], keys: [keyPath] }] } }).signatures);
    expect(keysOnly.for('x/app')!.fingerprint).not.toBe(policy.fingerprint);
  });
});
