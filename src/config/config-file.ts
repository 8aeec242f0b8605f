import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

// The config file: where it is, and loading it. Nothing here needs the schema (and zod): the CLI
// imports this first, to start loading the file before the rest of the mirror (see preloadConfigFile()).

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

/** TypeScript config files, transpiled (in a worker) as they load. */
function isTypeScript(file: string): boolean {
  return /\.[mc]?ts$/.test(file);
}

/** The config file a command line names, as loadConfig() resolves it: --config, else $MIRROR_CONFIG, else the default. */
export function configFileFor(args: string[], env: NodeJS.ProcessEnv, cwd: string): string {
  let named: string | undefined;
  try {
    named = parseArgs({ args, options: { config: { type: 'string', short: 'c' } }, strict: false, allowPositionals: true }).values.config as string | undefined;
  } catch {
    // the command reports bad usage itself
  }
  return configFilePath(named, env, cwd);
}

/** Which config file to load: the one named (--config) beats $MIRROR_CONFIG, which beats the default. */
export function configFilePath(named: string | undefined, env: NodeJS.ProcessEnv, cwd: string): string {
  return resolve(cwd, named || env[ENV.config] || DEFAULT_CONFIG_FILE);
}

const preloaded = new Map<string, Promise<unknown>>();

/**
 * Starts loading a TypeScript config file now, for the next importConfigFile() of the same file.
 * Its worker (Node's start-up in a thread, then jiti: ~0.2 s) then runs on another core while the
 * CLI loads the rest of the mirror's modules, instead of after them. Failures surface when the
 * file is imported; a file never imported costs only that work.
 */
export function preloadConfigFile(file: string): void {
  if (!isTypeScript(file) || preloaded.has(file) || !existsSync(file)) return;
  const loading = importTypeScriptApart(file);
  loading.catch(() => {}); // reported by importConfigFile(), if it is ever asked for
  preloaded.set(file, loading);
}

/** The config object a file exports (as default), TypeScript, JavaScript or JSON. */
export async function importConfigFile(file: string): Promise<unknown> {
  let mod: { default?: unknown };
  const early = preloaded.get(file);
  if (early) {
    preloaded.delete(file); // used once: a later load reads the file afresh
    mod = (await early) as { default?: unknown };
  } else if (isTypeScript(file)) {
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
