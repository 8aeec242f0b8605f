import { existsSync } from 'node:fs';
import { configFilePath, ENV, importConfigFile } from './config-file.js';
import { configSchema, describeConfigErrors, upstreamNames, type MirrorConfig, type MirrorConfigInput } from './schema.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export { DEFAULT_CONFIG_FILE, ENV } from './config-file.js';

/** Loads the config file (TypeScript or JavaScript), applies the environment overrides, validates. */
export async function loadConfig(
  opts: { path?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<MirrorConfig> {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const file = configFilePath(opts.path, env, cwd);
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
