import { createHash } from 'node:crypto';
import type { MirrorConfig } from '../config/schema.js';
import { compilePattern } from './patterns.js';
import { loadPublicKey, type NamedKey } from './keys.js';
import { describeIdentities, loadKeylessTrust, type KeylessTrust } from './keyless.js';

export type PolicyMode = 'enforce' | 'warn';

export interface Policy {
  /** Its position in the config, for messages. */
  index: number;
  mode: PolicyMode;
  keys: NamedKey[];
  /** Keyless signatures: a trusted root and who may sign. */
  keyless?: KeylessTrust;
  /** Changes when the keys or the mode change: verdicts reached under another are checked again. */
  fingerprint: string;
}

interface CompiledPolicy extends Policy {
  matches: (repository: string) => boolean;
}

/** The configured signature policies, keys loaded; the first whose pattern matches decides. */
export class SignaturePolicies {
  private constructor(private readonly policies: CompiledPolicy[]) {}

  /** Loads every key and trusted root file: a missing or malformed one throws, naming the file. */
  static load(config: MirrorConfig['signatures']): SignaturePolicies {
    const cache = new Map<string, NamedKey>();
    const policies = config.policies.map((p, index): CompiledPolicy => {
      const keys = p.keys.map((path) => cache.get(path) ?? cache.set(path, loadPublicKey(path)).get(path)!);
      const hash = createHash('sha256').update(p.mode);
      for (const k of keys) hash.update(k.name).update(k.key.export({ type: 'spki', format: 'der' }));
      const keyless = p.trustedRoot ? loadKeylessTrust(p.trustedRoot, p.identities) : undefined;
      if (keyless) hash.update(keyless.name).update(keyless.fingerprint);
      const matchers = p.repositories.map(compilePattern);
      return { index, mode: p.mode, keys, ...(keyless ? { keyless } : {}), fingerprint: hash.digest('hex').slice(0, 16), matches: (r) => matchers.some((m) => m(r)) };
    });
    return new SignaturePolicies(policies);
  }

  get empty(): boolean {
    return this.policies.length === 0;
  }

  /** The policy that decides for a repository key (`ghcr.io/org/app`), if any. */
  for(repository: string): Policy | undefined {
    return this.policies.find((p) => p.matches(repository));
  }
}

/** The signers as messages name them: `keys/a.pub or keys/b.pub or dev@example.com (https://issuer) under root.json`. */
export function describeSigners({ keys, keyless }: Pick<Policy, 'keys' | 'keyless'>): string {
  const named = keys.map((k) => k.name);
  if (keyless) named.push(`${describeIdentities(keyless.identities)} under ${keyless.name}`);
  return named.join(' or ');
}
