import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from '../config/load.js';

/** A bad key file: stops start-up, naming the file and what is wrong with it. */
export class SignatureKeyError extends ConfigError {
  override name = 'SignatureKeyError';
}

export interface NamedKey {
  /** The path as the config names it: what messages say (`keys/org.pub`). */
  name: string;
  key: KeyObject;
}

const EC_CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1']);

/**
 * Reads a PEM public key of a kind cosign makes: ECDSA P-256 (`cosign generate-key-pair`; P-384
 * and P-521 too), Ed25519, or RSA of at least 2048 bits.
 */
export function loadPublicKey(path: string): NamedKey {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new SignatureKeyError(`signature key ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (/PRIVATE KEY-----/.test(text)) {
    throw new SignatureKeyError(`signature key ${path} is a private key; give the public key (cosign.pub)`);
  }
  if (!text.includes('-----BEGIN PUBLIC KEY-----')) {
    throw new SignatureKeyError(`signature key ${path} is not a PEM public key (expected -----BEGIN PUBLIC KEY-----, as cosign.pub)`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey(text);
  } catch (e) {
    throw new SignatureKeyError(`signature key ${path} is not a valid PEM public key (${(e as Error).message})`);
  }
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === 'ec' && EC_CURVES.has(details.namedCurve ?? '')) return { name: path, key };
  if (type === 'ed25519') return { name: path, key };
  if (type === 'rsa' && (details.modulusLength ?? 0) >= 2048) return { name: path, key };
  const what = type === 'ec' ? `an EC key on curve ${details.namedCurve}` : type === 'rsa' ? `a ${details.modulusLength}-bit RSA key` : `a ${type} key`;
  throw new SignatureKeyError(`signature key ${path} is ${what}; cosign keys are ECDSA P-256/P-384/P-521, Ed25519 or RSA (2048 bits or more)`);
}
