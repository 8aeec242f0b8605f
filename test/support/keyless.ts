// Keyless signing made offline with the openssl CLI: a Fulcio-like certificate authority issuing
// short-lived certificates with an e-mail SAN and Fulcio's OIDC-issuer extension, an RFC 3161
// timestamp authority that times each signature (what proves the certificate was valid when it
// signed), optionally a Rekor-like transparency log (a key signing each entry's promise and a
// one-entry tree's checkpoint), and the Sigstore TrustedRoot JSON naming them, as `cosign
// trusted-root create` writes it.
import { execFileSync } from 'node:child_process';
import { createHash, sign, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { COSIGN, newSigningKey, signStatement } from './signing.js';

export interface KeylessIdentity {
  subject: string;
  issuer: string;
  /** Put the issuer in the legacy extension 1.3.6.1.4.1.57264.1.1 (raw), not 1.3.6.1.4.1.57264.1.8. */
  legacyIssuer?: boolean;
}

export interface KeylessAuthority {
  dir: string;
  name: string;
  /** The TrustedRoot JSON naming this CA and TSA. */
  trustedRoot: string;
  /** The CA's certificate, DER. */
  caDer: Buffer;
  tsa: { cert: string; key: string; rootDer: Buffer; leafDer: Buffer };
  /** The transparency log, when made: its origin (the base URL's host) and key. */
  log?: { origin: string; key: KeyObject; id: Buffer };
}

function openssl(dir: string, ...args: string[]): Buffer {
  return execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
}

function der(dir: string, pem: string): Buffer {
  return openssl(dir, 'x509', '-in', pem, '-outform', 'DER');
}

/** A self-signed EC P-256 CA in `dir` (`<name>.pem`, `<name>.key`). */
function selfSignedCa(dir: string, name: string, cn: string): void {
  openssl(dir, 'req', '-x509', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`,
    '-subj', `/O=sparse-mirror test/CN=${cn}`, '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
}

/** Issues `<name>.pem` for `<name>.key` (made here) from the CA `ca`, with the extensions in `ext`. */
function issue(dir: string, ca: string, name: string, ext: string, opts: { key?: string } = {}): void {
  if (!opts.key) openssl(dir, 'genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', `${name}.key`);
  else writeFileSync(join(dir, `${name}.key`), opts.key);
  openssl(dir, 'req', '-new', '-key', `${name}.key`, '-subj', '/O=sparse-mirror test', '-out', `${name}.csr`);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '1', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
}

/**
 * A CA named `name` and a timestamp authority in `dir`, and `<name>-trusted_root.json` naming
 * them (a CA that is not in it: make another authority and sign with that).
 */
export function keylessAuthority(dir: string, name: string, opts: { log?: boolean } = {}): KeylessAuthority {
  selfSignedCa(dir, `${name}-ca`, `${name} fulcio`);
  selfSignedCa(dir, `${name}-tsa-root`, `${name} tsa root`);
  issue(dir, `${name}-tsa-root`, `${name}-tsa`, 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,timeStamping\n');
  const caDer = der(dir, `${name}-ca.pem`);
  const tsa = { cert: `${name}-tsa.pem`, key: `${name}-tsa.key`, rootDer: der(dir, `${name}-tsa-root.pem`), leafDer: der(dir, `${name}-tsa.pem`) };
  const authority = (subject: string, certs: Buffer[]) => ({
    subject: { organization: 'sparse-mirror test', commonName: subject },
    uri: `https://${subject.replace(/\W+/g, '-')}.invalid`,
    certChain: { certificates: certs.map((c) => ({ rawBytes: c.toString('base64') })) },
    validFor: { start: '2020-01-01T00:00:00Z' },
  });
  const log = opts.log ? testLog(name) : undefined;
  const root = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: log ? [log.instance] : [],
    certificateAuthorities: [authority(`${name} fulcio`, [caDer])],
    ctlogs: [],
    timestampAuthorities: [authority(`${name} tsa`, [tsa.leafDer, tsa.rootDer])],
  };
  const trustedRoot = join(dir, `${name}-trusted_root.json`);
  writeFileSync(trustedRoot, JSON.stringify(root, null, 2));
  writeFileSync(join(dir, `${name}-tsa.cnf`), tsaConfig(name));
  writeFileSync(join(dir, `${name}-tsa.serial`), '01\n');
  return { dir, name, trustedRoot, caDer, tsa, ...(log ? { log: log.log } : {}) };
}

function testLog(name: string) {
  const { privateKey, publicKey } = newSigningKey('p256');
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const id = createHash('sha256').update(spki).digest();
  const origin = `${name}-rekor.invalid`;
  const instance = {
    baseUrl: `https://${origin}`,
    hashAlgorithm: 'SHA2_256',
    publicKey: { rawBytes: spki.toString('base64'), keyDetails: 'PKIX_ECDSA_P256_SHA_256', validFor: { start: '2020-01-01T00:00:00Z' } },
    logId: { keyId: id.toString('base64') },
  };
  return { instance, log: { origin, key: privateKey, id } };
}

/**
 * The entry a Rekor-like log makes of a DSSE signature (dsse v0.0.1): alone in a one-entry tree,
 * with its inclusion promise (the log's signature over body, time, index and log ID, canonical
 * JSON) and its inclusion proof (a checkpoint signed as a note).
 */
function logEntry(log: NonNullable<KeylessAuthority['log']>, envelope: ReturnType<typeof signStatement>, certPem: Buffer): Record<string, unknown> {
  const body = Buffer.from(
    JSON.stringify({
      apiVersion: '0.0.1',
      kind: 'dsse',
      spec: {
        payloadHash: { algorithm: 'sha256', value: createHash('sha256').update(Buffer.from(envelope.payload, 'base64')).digest('hex') },
        signatures: [{ signature: envelope.signatures[0]!.sig, verifier: certPem.toString('base64') }],
      },
    }),
  );
  const integratedTime = Math.floor(Date.now() / 1000);
  // Keys in canonical (sorted) order.
  const promised = JSON.stringify({ body: body.toString('base64'), integratedTime, logID: log.id.toString('hex'), logIndex: 0 });
  const root = createHash('sha256').update(Buffer.from([0])).update(body).digest();
  const note = `${log.origin}\n1\n${root.toString('base64')}\n`;
  const noteSig = Buffer.concat([log.id.subarray(0, 4), sign('sha256', Buffer.from(note), log.key)]).toString('base64');
  return {
    logIndex: '0',
    logId: { keyId: log.id.toString('base64') },
    kindVersion: { kind: 'dsse', version: '0.0.1' },
    integratedTime: String(integratedTime),
    inclusionPromise: { signedEntryTimestamp: sign('sha256', Buffer.from(promised), log.key).toString('base64') },
    inclusionProof: { logIndex: '0', rootHash: root.toString('base64'), treeSize: '1', hashes: [], checkpoint: { envelope: `${note}\n\u2014 ${log.origin} ${noteSig}\n` } },
    canonicalizedBody: body.toString('base64'),
  };
}

function tsaConfig(name: string): string {
  return `[ tsa ]\ndefault_tsa = tsa_config\n[ tsa_config ]\nserial = ${name}-tsa.serial\nsigner_digest = sha256\ndefault_policy = 1.3.6.1.4.1.57264.2\ndigests = sha256\ness_cert_id_alg = sha256\naccuracy = secs:1\nordering = no\ntsa_name = no\ness_cert_id_chain = no\n`;
}

/** An RFC 3161 time-stamp response (status and token, what a bundle holds) over `data` by the authority's TSA. */
function timestamp(a: KeylessAuthority, name: string, data: Buffer): Buffer {
  const file = `${name}.sig`;
  writeFileSync(join(a.dir, file), data);
  openssl(a.dir, 'ts', '-query', '-data', file, '-sha256', '-cert', '-no_nonce', '-out', `${name}.tsq`);
  openssl(a.dir, 'ts', '-reply', '-config', `${a.name}-tsa.cnf`, '-queryfile', `${name}.tsq`, '-inkey', a.tsa.key, '-signer', a.tsa.cert, '-out', `${name}.tsr`);
  return readFileSync(join(a.dir, `${name}.tsr`));
}

let serial = 0;

/**
 * A Sigstore bundle (v0.3) as keyless `cosign sign` writes it: the DSSE statement signed with a
 * fresh key, the certificate the CA (or `issuedBy`'s) issued for it to `identity`, and an RFC 3161
 * timestamp of the signature by `a`'s TSA (unless `timestamp: false`), and an entry in
 * `loggedBy`'s transparency log if given.
 */
export function keylessBundle(
  a: KeylessAuthority,
  digest: string,
  identity: KeylessIdentity,
  opts: { issuedBy?: KeylessAuthority; timestamp?: boolean; loggedBy?: KeylessAuthority } = {},
): Buffer {
  const name = `leaf-${process.pid}-${++serial}`;
  const { privateKey } = newSigningKey('p256');
  const issuerExt = identity.legacyIssuer
    ? `1.3.6.1.4.1.57264.1.1=DER:${Buffer.from(identity.issuer).toString('hex')}`
    : `1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:${identity.issuer}`;
  issue(a.dir, `${(opts.issuedBy ?? a).name}-ca`, name, `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\nsubjectAltName=critical,email:${identity.subject}\n${issuerExt}\n`, {
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  });
  const envelope = signStatement(digest, privateKey);
  const timestamps = opts.timestamp === false ? [] : [{ signedTimestamp: timestamp(a, name, Buffer.from(envelope.signatures[0]!.sig, 'base64')).toString('base64') }];
  const log = opts.loggedBy?.log;
  return Buffer.from(
    JSON.stringify({
      mediaType: COSIGN.sigstoreBundle,
      verificationMaterial: {
        certificate: { rawBytes: der(a.dir, `${name}.pem`).toString('base64') },
        tlogEntries: log ? [logEntry(log, envelope, readFileSync(join(a.dir, `${name}.pem`)))] : [],
        timestampVerificationData: { rfc3161Timestamps: timestamps },
      },
      dsseEnvelope: envelope,
    }),
  );
}
