import { watchFile, unwatchFile } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import type { Server as HttpsServer } from 'node:https';
import type { MirrorConfig } from '../config/schema.js';
import type { Logger } from '../log.js';

export type TlsConfig = NonNullable<MirrorConfig['tls']>;

/** How often the certificate files are checked for a change (cert-manager, certbot renewals). */
const WATCH_INTERVAL_MS = 1000;

/**
 * Reads and checks the PEM files. A missing or unusable file is an error naming it and the key
 * that points at it, so a bad deployment stops at start-up instead of failing handshakes.
 */
export async function loadTls(tls: TlsConfig): Promise<SecureContextOptions & { requestCert: boolean; rejectUnauthorized: boolean }> {
  const read = async (key: keyof TlsConfig): Promise<Buffer> => {
    const path = tls[key]!;
    try {
      return await readFile(path);
    } catch (e) {
      throw new Error(`tls.${key}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  const cert = await read('cert');
  const key = await read('key');
  const ca = tls.clientCA ? await read('clientCA') : undefined;
  for (const [name, bytes] of [['cert', cert], ['key', key], ['clientCA', ca]] as const) {
    if (bytes && !bytes.toString('latin1').includes('-----BEGIN ')) throw new Error(`tls.${name}: ${tls[name]} is not a PEM file`);
  }
  try {
    createSecureContext({ cert, key, ca });
  } catch (e) {
    throw new Error(`tls: the certificate ${tls.cert} and key ${tls.key} are unusable together: ${(e as Error).message}`);
  }
  return { cert, key, ca, requestCert: ca !== undefined, rejectUnauthorized: ca !== undefined };
}

/** Swaps in the new certificate when a file changes; a bad new one is logged and the old kept. */
export function watchTls(server: HttpsServer, tls: TlsConfig, log: Logger): () => void {
  const files = [tls.cert, tls.key, ...(tls.clientCA ? [tls.clientCA] : [])];
  let reloading = Promise.resolve();
  const reload = (): void => {
    reloading = reloading.then(async () => {
      try {
        const options = await loadTls(tls);
        server.setSecureContext(options);
        log.info('tls certificate reloaded', { cert: tls.cert });
      } catch (e) {
        log.warn('tls certificate change not applied; still serving the previous one', { error: (e as Error).message });
      }
    });
  };
  const onChange = (cur: { mtimeMs: number; ino: number; size: number }, prev: { mtimeMs: number; ino: number; size: number }): void => {
    if (cur.mtimeMs !== prev.mtimeMs || cur.ino !== prev.ino || cur.size !== prev.size) reload();
  };
  for (const f of files) watchFile(f, { interval: WATCH_INTERVAL_MS, persistent: false }, onChange);
  return () => {
    for (const f of files) unwatchFile(f, onChange);
  };
}
