// Keyless signing made offline with the openssl CLI: a Fulcio-like certificate authority issuing
// short-lived certificates with an e-mail SAN and Fulcio's OIDC-issuer extension, an RFC 3161
// timestamp authority that times each signature (what proves the certificate was valid when it
// signed), and the Sigstore TrustedRoot JSON naming both, as `cosign trusted-root create` writes it.
import { execFileSync } from 'node:child_process';
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
export function keylessAuthority(dir: string, name: string): KeylessAuthority {
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
  const root = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [],
    certificateAuthorities: [authority(`${name} fulcio`, [caDer])],
    ctlogs: [],
    timestampAuthorities: [authority(`${name} tsa`, [tsa.leafDer, tsa.rootDer])],
  };
  const trustedRoot = join(dir, `${name}-trusted_root.json`);
  writeFileSync(trustedRoot, JSON.stringify(root, null, 2));
  writeFileSync(join(dir, `${name}-tsa.cnf`), tsaConfig(name));
  writeFileSync(join(dir, `${name}-tsa.serial`), '01\n');
  return { dir, name, trustedRoot, caDer, tsa };
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
 * timestamp of the signature by `a`'s TSA. No transparency-log entry (the trusted root names no log).
 */
export function keylessBundle(a: KeylessAuthority, digest: string, identity: KeylessIdentity, opts: { issuedBy?: KeylessAuthority } = {}): Buffer {
  const name = `leaf-${process.pid}-${++serial}`;
  const { privateKey } = newSigningKey('p256');
  const issuerExt = identity.legacyIssuer
    ? `1.3.6.1.4.1.57264.1.1=DER:${Buffer.from(identity.issuer).toString('hex')}`
    : `1.3.6.1.4.1.57264.1.8=ASN1:UTF8String:${identity.issuer}`;
  issue(a.dir, `${(opts.issuedBy ?? a).name}-ca`, name, `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\nsubjectAltName=critical,email:${identity.subject}\n${issuerExt}\n`, {
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
  });
  const envelope = signStatement(digest, privateKey);
  const token = timestamp(a, name, Buffer.from(envelope.signatures[0]!.sig, 'base64'));
  return Buffer.from(
    JSON.stringify({
      mediaType: COSIGN.sigstoreBundle,
      verificationMaterial: {
        certificate: { rawBytes: der(a.dir, `${name}.pem`).toString('base64') },
        tlogEntries: [],
        timestampVerificationData: { rfc3161Timestamps: [{ signedTimestamp: token.toString('base64') }] },
      },
      dsseEnvelope: envelope,
    }),
  );
}
