// A private CA made with openssl for a test, and certificates it signs (server for 127.0.0.1,
// client for mTLS). Files in a temp dir; PEM throughout.
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, onProcessExit } from './exec.js';

export interface TestCa {
  dir: string;
  /** The CA certificate file. */
  cert: string;
  certPem: Buffer;
  /** Issues a certificate: `server` for 127.0.0.1 and localhost, `client` for mTLS. */
  issue(name: string, kind: 'server' | 'client'): Promise<{ cert: string; key: string }>;
}

async function openssl(args: string[]): Promise<void> {
  const r = await exec('openssl', args, { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
}

export async function makeCa(name = 'sparse-mirror test CA'): Promise<TestCa> {
  const dir = await mkdtemp(join(tmpdir(), 'sm-ca-'));
  onProcessExit(() => rmSync(dir, { recursive: true, force: true }));
  const cert = join(dir, 'ca.crt');
  const key = join(dir, 'ca.key');
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '2', '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return {
    dir,
    cert,
    certPem: await readFile(cert),
    async issue(leaf, kind) {
      const leafKey = join(dir, `${leaf}.key`);
      const csr = join(dir, `${leaf}.csr`);
      const leafCert = join(dir, `${leaf}.crt`);
      const ext = join(dir, `${leaf}.ext`);
      await writeFile(
        ext,
        kind === 'server'
          ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n'
          : 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n',
      );
      await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', leafKey, '-out', csr, '-subj', `/CN=${leaf}`]);
      await openssl(['x509', '-req', '-in', csr, '-CA', cert, '-CAkey', key, '-CAcreateserial', '-out', leafCert, '-days', '2', '-extfile', ext]);
      return { cert: leafCert, key: leafKey };
    },
  };
}
