// Runs a real Docker distribution registry (Debian `docker-registry`, distribution 2.8)
// on a loopback port, for integration tests that need a genuine upstream.
// The binary is `docker-registry` on PATH unless DOCKER_REGISTRY_BIN names another.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { Agent, request } from 'undici';
import type { TokenServerHandle } from './token-server.js';

export interface RegistryHandle {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT */
  host: string;
  /** storage root directory */
  dir: string;
  /**
   * Kills the registry and removes its temp dirs. `keepStorage` leaves a generated storage dir
   * in place (then owned by the caller) so it can be served again via `storageDir`.
   */
  stop(opts?: { keepStorage?: boolean }): Promise<void>;
}

export interface BasicAuth {
  username: string;
  password: string;
}

export interface StartRegistryOptions {
  /** htpasswd users (bcrypt) or token auth trusting the token server's certificate. */
  auth?: { basic: BasicAuth[] } | { token: TokenServerHandle };
  /** Reuse a storage directory (e.g. fill it without auth, then restart with auth). Never deleted by stop(). */
  storageDir?: string;
  /** Run distribution as a pull-through cache of `remoteurl`. */
  proxy?: { remoteurl: string; username?: string; password?: string };
  /** Serve HTTPS with this certificate and key (PEM files); `clientcas`: require client certificates. */
  tls?: { certificate: string; key: string; clientcas?: string[] };
  /**
   * Keep blobs in this S3 bucket (the run's RGW) instead of the filesystem: the registry then
   * answers a blob GET with a redirect to a presigned URL of the S3 server, as registries on
   * object storage do.
   */
  s3?: { endpoint: string; region: string; accessKeyId: string; secretAccessKey: string; bucket: string };
}

const STARTUP_TIMEOUT_MS = 15_000;

/** Children still running; killed synchronously if the test process exits without stop(). */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of liveChildren) child.kill('SIGKILL');
  });
}

/** A currently free TCP port on 127.0.0.1 (racy by nature, but fine for tests). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('freePort: unexpected server address'));
        return;
      }
      server.close(() => resolve(address.port));
    });
  });
}

/**
 * Proxy mode must reach `remoteurl` directly, whatever proxy the test environment sets; S3
 * storage takes its settings from the config alone (an AWS_CA_BUNDLE in the environment makes
 * the registry's AWS SDK panic at start).
 */
function envWithoutProxies(): NodeJS.ProcessEnv {
  const proxyVars = ['http_proxy', 'https_proxy', 'all_proxy', 'no_proxy'];
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !proxyVars.includes(k.toLowerCase()) && !k.startsWith('AWS_')));
}

async function htpasswdFile(users: BasicAuth[]): Promise<string> {
  // Low cost keeps per-request verification in the registry fast; Go's bcrypt accepts $2b$.
  const lines = await Promise.all(users.map(async (u) => `${u.username}:${await bcrypt.hash(u.password, 5)}`));
  return lines.join('\n') + '\n';
}

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RegistryHandle> {
  const workDir = await mkdtemp(join(tmpdir(), 'sparse-mirror-registry-'));
  const ownsStorage = opts.storageDir === undefined;
  const storageDir = opts.storageDir ?? (await mkdtemp(join(tmpdir(), 'sparse-mirror-storage-')));
  await mkdir(storageDir, { recursive: true });
  const cleanup = async (keepStorage: boolean): Promise<void> => {
    await rm(workDir, { recursive: true, force: true });
    if (ownsStorage && !keepStorage) await rm(storageDir, { recursive: true, force: true });
  };
  const auth = await authConfig(opts.auth, workDir).catch(async (err: unknown) => {
    await cleanup(false);
    throw err;
  });

  // freePort() can race with other test processes; retry on a fresh port if it was taken.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const config = { ...registryConfig(`127.0.0.1:${port}`, storageDir), ...auth, ...(opts.proxy ? { proxy: { ...opts.proxy } } : {}) };
    if (opts.tls) config.http.tls = opts.tls;
    if (opts.s3) {
      const { endpoint, region, accessKeyId, secretAccessKey, bucket } = opts.s3;
      const storage = (config as Record<string, unknown>).storage as Record<string, unknown>;
      delete storage.filesystem;
      storage.s3 = { regionendpoint: endpoint, region, accesskey: accessKeyId, secretkey: secretAccessKey, bucket, secure: endpoint.startsWith('https:'), v4auth: true };
    }
    const result = await launch(config, workDir, cleanup);
    if ('handle' in result) return { ...result.handle, dir: storageDir };
    if (!result.portTaken || attempt === 3) {
      await cleanup(false);
      throw new Error(result.message);
    }
  }
}

async function authConfig(auth: StartRegistryOptions['auth'], workDir: string): Promise<Record<string, unknown>> {
  if (auth && 'basic' in auth) {
    const path = join(workDir, 'htpasswd');
    await writeFile(path, await htpasswdFile(auth.basic));
    return { auth: { htpasswd: { realm: 'sparse-mirror-test', path } } };
  }
  if (auth && 'token' in auth) {
    const t = auth.token;
    return { auth: { token: { realm: t.url, service: t.service, issuer: t.issuer, rootcertbundle: t.certPath } } };
  }
  return {};
}

interface RegistryConfig {
  http: { addr: string; secret: string; headers: Record<string, string[]>; tls?: StartRegistryOptions['tls'] };
  [key: string]: unknown;
}

function registryConfig(addr: string, storageDir: string): RegistryConfig {
  return {
    version: 0.1,
    log: { level: 'warn', formatter: 'text', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: storageDir },
      delete: { enabled: true },
      // No periodic background walk of the storage during tests.
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: {
      addr,
      secret: 'sparse-mirror-test-secret',
      // The instance header proves the readiness probe reached this child, not some other
      // process that grabbed the port in between.
      headers: { 'X-Content-Type-Options': ['nosniff'], [INSTANCE_HEADER]: [randomUUID()] },
    },
  };
}

const INSTANCE_HEADER = 'X-Sparse-Mirror-Test-Instance';
const PROBE = new Agent({ connect: { rejectUnauthorized: false } });

type LaunchResult = { handle: Omit<RegistryHandle, 'dir'> } | { message: string; portTaken: boolean };

async function launch(
  config: RegistryConfig,
  workDir: string,
  cleanup: (keepStorage: boolean) => Promise<void>,
): Promise<LaunchResult> {
  const registryBin = process.env.DOCKER_REGISTRY_BIN ?? 'docker-registry';
  const configPath = join(workDir, 'config.yml');
  // JSON is valid YAML, so the config can be generated without a YAML library.
  await writeFile(configPath, JSON.stringify(config, null, 2));

  let output = '';
  const child = spawn(registryBin, ['serve', configPath], { stdio: ['ignore', 'pipe', 'pipe'], env: envWithoutProxies() });
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-8192);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  liveChildren.add(child);
  installExitHook();

  const exited = new Promise<string>((resolve) => {
    child.once('error', (err) => resolve(`failed to spawn ${registryBin}: ${err.message}`));
    child.once('exit', (code, signal) => resolve(`${registryBin} exited (code ${code}, signal ${signal})`));
  });
  void exited.then(() => liveChildren.delete(child));

  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
  };

  const host = config.http.addr;
  const url = `${config.http.tls ? 'https' : 'http'}://${host}`;
  const gaveUp = { value: false };
  const instance = config.http.headers[INSTANCE_HEADER]?.[0] ?? '';
  const failure = await Promise.race([waitForV2(url, instance, gaveUp), exited]);
  gaveUp.value = true;
  if (failure === undefined) {
    return {
      handle: {
        url,
        host,
        async stop({ keepStorage = false } = {}) {
          await kill();
          await cleanup(keepStorage);
        },
      },
    };
  }
  await kill();
  const hint = failure.includes('ENOENT') ? ' (is the Debian docker-registry package installed?)' : '';
  return {
    message: `registry did not start: ${failure}${hint}\n--- registry output ---\n${output}`,
    portTaken: output.includes('address already in use'),
  };
}

/** Resolves undefined once this instance answers GET /v2/ with 200 or 401, or an error description on timeout. */
async function waitForV2(url: string, instance: string, gaveUp: { value: boolean }): Promise<string | undefined> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (Date.now() < deadline && !gaveUp.value) {
    try {
      // The probe only asks whether this instance answers; trust is the test's business.
      const res = await request(`${url}/v2/`, { dispatcher: PROBE, signal: AbortSignal.timeout(1000) });
      await res.body.dump();
      const ours = res.headers[INSTANCE_HEADER.toLowerCase()] === instance;
      if (ours && (res.statusCode === 200 || res.statusCode === 401)) return undefined;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return `GET ${url}/v2/ did not answer 200/401 within ${STARTUP_TIMEOUT_MS / 1000}s`;
}
