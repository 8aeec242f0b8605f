import { watchFile, unwatchFile, type Stats } from 'node:fs';
import type { MirrorConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { SignatureGate } from './gate.js';
import { SignaturePolicies } from './policy.js';

const POLL_MS = 1000;

/**
 * Reloads the policies' keys when a key or trusted root file changes (a rotated cosign.pub):
 * verdicts reached with the old keys are reached again. A file that no longer loads is logged and the keys in force kept.
 */
export function watchSignatureKeys(gate: SignatureGate, config: MirrorConfig['signatures'], log: Logger): () => void {
  const files = [...new Set(config.policies.flatMap((p) => [...p.keys, ...(p.trustedRoot ? [p.trustedRoot] : [])]))];
  const changed = (cur: Stats, prev: Stats): void => {
    if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size && cur.ino === prev.ino) return;
    try {
      gate.usePolicies(SignaturePolicies.load(config));
      log.info('signature keys reloaded', { keys: files });
    } catch (e) {
      log.error('signature keys not reloaded; the previous keys stay in force', { error: (e as Error).message });
    }
  };
  for (const file of files) watchFile(file, { interval: POLL_MS, persistent: false }, changed);
  return () => files.forEach((file) => unwatchFile(file, changed));
}
