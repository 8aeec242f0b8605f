// Keyless Sigstore signatures (a Fulcio-style certificate in the bundle) checked offline against
// an admin-given TrustedRoot file, through @sigstore/verify. Nothing is fetched, ever.
//
// What is checked, all by the package except the identity: the certificate chains to a
// certificate authority of the root and was valid at a verified time; that time comes from an
// RFC 3161 timestamp by a timestamp authority of the root, or the integrated time of a
// transparency-log entry whose inclusion promise verifies with a log key of the root (one of the two
// is required: without a time the package checks no chain at all); every log entry is checked when
// the root names logs (without logs in the root they are ignored, and so are their times); the
// certificate's SCTs verify with the root's CT log keys (at least one is demanded when the root
// names CT logs); the signature verifies with the certificate's key. Then the certificate's
// subject (SAN) and OIDC issuer must match one configured identity exactly (or the whole subject
// the regular expression): the package's own policy check matches the SAN as an unanchored
// regular expression, too loose for an exact e-mail.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Bundle } from '@sigstore/bundle';
import type { TrustedRoot } from '@sigstore/protobuf-specs';
import type { toSignedEntity, toTrustMaterial, Verifier, Signer } from '@sigstore/verify';
import { SignatureKeyError } from './keys.js';
import { sigstore } from './sigstore-libs.js';

export interface SignerIdentity {
  subject?: string;
  subjectRegExp?: string;
  issuer: string;
}

export interface KeylessTrust {
  /** The trusted root's path as the config names it: what messages say. */
  name: string;
  identities: SignerIdentity[];
  /** Changes when the root's bytes or the identities change. */
  fingerprint: string;
  verifier: Verifier;
  hasTlogs: boolean;
}

export type KeylessCheck = { ok: true; signer: string } | { ok: false; reason: string };

/** Reads a TrustedRoot JSON (`cosign trusted-root create`, sigstore's TUF repository); a bad one throws, naming the file. */
export function loadKeylessTrust(path: string, identities: SignerIdentity[]): KeylessTrust {
  let text: Buffer;
  try {
    text = readFileSync(path);
  } catch (e) {
    throw new SignatureKeyError(`trusted root ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let root: TrustedRoot;
  let trust: ReturnType<typeof toTrustMaterial>;
  try {
    root = sigstore().specs.TrustedRoot.fromJSON(JSON.parse(text.toString('utf8')));
    trust = sigstore().verify.toTrustMaterial(root);
  } catch (e) {
    throw new SignatureKeyError(`trusted root ${path} is not a Sigstore TrustedRoot JSON (${(e as Error).message.slice(0, 200)})`);
  }
  if (trust.certificateAuthorities.length === 0) {
    throw new SignatureKeyError(`trusted root ${path} names no certificate authority: keyless certificates cannot chain to it`);
  }
  if (trust.timestampAuthorities.length === 0 && trust.tlogs.length === 0) {
    throw new SignatureKeyError(`trusted root ${path} names no timestamp authority and no transparency log: no signing time could be verified`);
  }
  const verifier = new (sigstore().verify.Verifier)(trust, { tlogThreshold: 0, ctlogThreshold: trust.ctlogs.length > 0 ? 1 : 0, timestampThreshold: 1 });
  const fingerprint = createHash('sha256').update(text).update(JSON.stringify(identities)).digest('hex').slice(0, 16);
  return { name: path, identities, fingerprint, verifier, hasTlogs: trust.tlogs.length > 0 };
}

/** Whether a certificate bundle verifies under `trust` and was signed by one of its identities. */
export function checkKeyless(bundle: Bundle, artifact: Buffer | undefined, trust: KeylessTrust): KeylessCheck {
  let entity: ReturnType<typeof toSignedEntity>;
  try {
    entity = sigstore().verify.toSignedEntity(bundle, artifact);
  } catch (e) {
    return { ok: false, reason: `its certificate or timestamps cannot be parsed (${(e as Error).message.slice(0, 200)})` };
  }
  // Without logs in the root, log entries cannot be checked: neither they nor their times count.
  const checked = trust.hasTlogs ? entity : { ...entity, tlogEntries: [], timestamps: entity.timestamps.filter((t) => t.$case === 'timestamp-authority') };
  if (checked.timestamps.length === 0) {
    return { ok: false, reason: `its certificate cannot be checked: no timestamp it carries is by an authority or log of ${trust.name}` };
  }
  let signer: Signer;
  try {
    signer = trust.verifier.verify(checked);
  } catch (e) {
    return { ok: false, reason: `it does not verify with ${trust.name}: ${describeFailure(e as Error)}` };
  }
  const subject = signer.identity?.subjectAlternativeName;
  const issuer = signer.identity?.extensions?.issuer;
  const match = trust.identities.find((i) => identityMatches(i, subject, issuer));
  if (!match) return { ok: false, reason: `its certificate is for ${subject ?? '(no subject)'} (issuer ${issuer ?? 'none'}), not ${describeIdentities(trust.identities)}` };
  return { ok: true, signer: `${subject} (${issuer})` };
}

/** An identity matches a certificate's subject and OIDC issuer: issuer exactly, subject exactly or wholly by the expression. */
export function identityMatches(identity: SignerIdentity, subject: string | undefined, issuer: string | undefined): boolean {
  if (subject === undefined || issuer !== identity.issuer) return false;
  if (identity.subject !== undefined) return subject === identity.subject;
  return new RegExp(`^(?:${identity.subjectRegExp})$`).test(subject);
}

export function describeIdentities(identities: SignerIdentity[]): string {
  return identities.map((i) => `${i.subject ?? `/${i.subjectRegExp}/`} (${i.issuer})`).join(' or ');
}

/** The package's error, with the cause it wraps (why the chain failed) where there is one. */
function describeFailure(e: Error): string {
  const cause = (e as Error & { cause?: unknown }).cause;
  const why = cause instanceof Error ? `${e.message}: ${cause.message}` : e.message;
  if (/certificate chain|no (valid|trusted) certificate path/i.test(why)) return `its certificate is not issued by a certificate authority it names (${why})`;
  if (/timestamp could not be verified/i.test(why)) return `its RFC 3161 timestamp is not by a timestamp authority it names (${why})`;
  if (/inclusion (promise|proof)|checkpoint|TLOG/i.test(`${why} ${(e as Error & { code?: string }).code ?? ''}`)) return `its transparency-log entry does not verify with a log it names (${why.slice(0, 200)})`;
  return why.slice(0, 300);
}
