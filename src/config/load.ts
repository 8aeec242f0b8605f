import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { configSchema, describeConfigErrors, upstreamNames, type MirrorConfig, type MirrorConfigInput } from './schema.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The environment variables that override the config file, as deployments and scripts rely on them. */
export const ENV = {
  host: 'MIRROR_HOST',
  port: 'MIRROR_PORT',
  upstream: 'MIRROR_UPSTREAM',
  platforms: 'MIRROR_PLATFORMS',
  dataDir: 'MIRROR_DATA',
  offline: 'MIRROR_OFFLINE',
  config: 'MIRROR_CONFIG',
  /** Comma-separated `role=token` (or bare `token`, role pull) added to auth.tokens. */
  authTokens: 'MIRROR_AUTH_TOKENS',
  logLevel: 'MIRROR_LOG_LEVEL',
  /** cluster.secret, kept out of config files (a Kubernetes Secret). */
  clusterSecret: 'MIRROR_CLUSTER_SECRET',
} as const;

export const DEFAULT_CONFIG_FILE = 'mirror.config.ts';

/** Loads the config file (TypeScript or JavaScript), applies the environment overrides, validates. */
export async function loadConfig(
  opts: { path?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<MirrorConfig> {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  // An explicit --config beats MIRROR_CONFIG, which beats the default file.
  const file = resolve(cwd, opts.path || env[ENV.config] || DEFAULT_CONFIG_FILE);
  if (!existsSync(file)) throw new ConfigError(`config file ${file} does not exist`);
  let input: unknown;
  try {
    input = await importConfigFile(file);
  } catch (e) {
    throw new ConfigError(`cannot load config file ${file}: ${(e as Error).message}`);
  }
  return validateConfig(applyEnv(input as MirrorConfigInput, env), file);
}

export function validateConfig(input: unknown, source = 'config'): MirrorConfig {
  const r = configSchema.safeParse(input);
  if (!r.success) throw new ConfigError(`invalid configuration in ${source}:\n${describeConfigErrors(r.error)}`);
  return r.data;
}

async function importConfigFile(file: string): Promise<unknown> {
  let mod: { default?: unknown };
  if (/\.[mc]?ts$/.test(file)) {
    mod = (await importTypeScriptApart(file)) as { default?: unknown };
  } else if (file.endsWith('.json')) {
    mod = (await import(pathToFileURL(file).href, { with: { type: 'json' } })) as { default?: unknown };
  } else {
    mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
  }
  const config = mod.default ?? mod;
  if (typeof config !== 'object' || config === null) throw new Error('it must export a config object as default');
  return config;
}

/**
 * Node 20 cannot load TypeScript itself; jiti transpiles the config file on the fly. jiti and its
 * transpiler stay in memory once loaded (~40 MiB, a fifth of a serving mirror's footprint), so
 * the file is loaded in a worker thread that then exits, and only the config (plain data) comes
 * back. A config that cannot cross (a function in it) is loaded here instead.
 */
async function importTypeScriptApart(file: string): Promise<unknown> {
  const outcome = await new Promise<{ ok: true; mod: unknown } | { ok: false; message: string; cannotCross?: boolean }>((done, fail) => {
    const worker = new Worker(LOAD_IN_WORKER, { eval: true, workerData: { jiti: createRequire(import.meta.url).resolve('jiti'), base: import.meta.url, file } });
    worker.once('message', done);
    worker.once('error', fail);
    worker.once('exit', (code) => fail(new Error(`the config loader stopped (exit ${code})`))); // after a message: no effect
  });
  if (outcome.ok) return outcome.mod;
  if (!outcome.cannotCross) throw new Error(outcome.message);
  const { createJiti } = await import('jiti');
  return createJiti(import.meta.url, { moduleCache: false }).import(file);
}

const LOAD_IN_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
require(workerData.jiti).createJiti(workerData.base, { moduleCache: false }).import(workerData.file).then(
  (mod) => {
    try {
      parentPort.postMessage({ ok: true, mod });
    } catch (e) {
      parentPort.postMessage({ ok: false, cannotCross: true, message: String(e && e.message) });
    }
  },
  (e) => parentPort.postMessage({ ok: false, message: String((e && e.message) || e) }),
);
`;

export function applyEnv(input: MirrorConfigInput, env: NodeJS.ProcessEnv): MirrorConfigInput {
  const out: MirrorConfigInput = { ...input };
  const host = env[ENV.host];
  if (host) out.host = host;
  const port = env[ENV.port];
  if (port !== undefined && port !== '') {
    if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) throw new ConfigError(`${ENV.port}: "${port}" is not a port number`);
    out.port = Number(port);
  }
  const data = env[ENV.dataDir];
  if (data) out.dataDir = data;
  const platforms = env[ENV.platforms];
  if (platforms) out.platforms = platforms.split(',').map((p) => p.trim()).filter(Boolean);
  const offline = env[ENV.offline];
  if (offline !== undefined && offline !== '') {
    if (!/^(1|0|true|false)$/i.test(offline)) throw new ConfigError(`${ENV.offline}: "${offline}" must be 1 or 0`);
    out.offline = /^(1|true)$/i.test(offline);
  }
  const level = env[ENV.logLevel];
  if (level) out.log = { ...out.log, level: level as 'info' };
  const secret = env[ENV.clusterSecret];
  if (secret && out.cluster) out.cluster = { ...out.cluster, secret };
  const tokens = env[ENV.authTokens];
  if (tokens) {
    const extra = tokens
      .split(',')
      .map((t) => t.trim())
      .filter(Boolean)
      .map((entry) => {
        const eq = entry.indexOf('=');
        return eq > 0 ? { role: entry.slice(0, eq) as 'pull', token: entry.slice(eq + 1) } : { token: entry };
      });
    out.auth = { ...out.auth, tokens: [...(out.auth?.tokens ?? []), ...extra] };
  }
  const upstream = env[ENV.upstream];
  // A malformed `upstreams` is left as it is, for validation to name it.
  if (upstream && (out.upstreams === undefined || Array.isArray(out.upstreams))) {
    let url: URL;
    try {
      url = new URL(upstream);
    } catch {
      throw new ConfigError(`${ENV.upstream}: "${upstream}" is not a URL`);
    }
    const upstreams = [...(out.upstreams ?? [])];
    const existing = upstreams.find((u) => safeHost(u.url) === url.host);
    if (existing) {
      out.defaultUpstream = url.host;
    } else {
      // A new default upstream: it takes no credentials from the one it replaces as default.
      upstreams.unshift({ url: url.origin });
      out.defaultUpstream = url.host;
    }
    out.upstreams = upstreams;
  }
  return out;
}

function safeHost(u: string): string | undefined {
  try {
    return new URL(u).host;
  } catch {
    return undefined;
  }
}

export { upstreamNames };
export type { MirrorConfig };
