import { createHash } from 'node:crypto';
import type { MirrorConfig } from '../config/schema.js';
import { compilePattern } from './patterns.js';
import { loadPublicKey, type NamedKey } from './keys.js';

export type PolicyMode = 'enforce' | 'warn';

export interface Policy {
  /** Its position in the config, for messages. */
  index: number;
  mode: PolicyMode;
  keys: NamedKey[];
  /** Changes when the keys or the mode change: verdicts reached under another are checked again. */
  fingerprint: string;
}

interface CompiledPolicy extends Policy {
  matches: (repository: string) => boolean;
}

/** The configured signature policies, keys loaded; the first whose pattern matches decides. */
export class SignaturePolicies {
  private constructor(private readonly policies: CompiledPolicy[]) {}

  /** Loads every key file: a missing or malformed one throws, naming the file. */
  static load(config: MirrorConfig['signatures']): SignaturePolicies {
    const cache = new Map<string, NamedKey>();
    const policies = config.policies.map((p, index): CompiledPolicy => {
      const keys = p.keys.map((path) => cache.get(path) ?? cache.set(path, loadPublicKey(path)).get(path)!);
      const hash = createHash('sha256').update(p.mode);
      for (const k of keys) hash.update(k.name).update(k.key.export({ type: 'spki', format: 'der' }));
      const matchers = p.repositories.map(compilePattern);
      return { index, mode: p.mode, keys, fingerprint: hash.digest('hex').slice(0, 16), matches: (r) => matchers.some((m) => m(r)) };
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

/** The keys as messages name them: `keys/a.pub` or `keys/a.pub or keys/b.pub`. */
export function describeKeys(keys: NamedKey[]): string {
  return keys.map((k) => k.name).join(' or ');
}
