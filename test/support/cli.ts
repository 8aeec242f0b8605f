// Builds the project once per test file and runs the `sparse-mirror` CLI the way a user runs it:
// `node <build>/src/cli.js <command> …` in a child process, configured by a config file named in
// MIRROR_CONFIG. The build goes to a private temp dir (same tsconfig, same compiler as `npm run
// build`) so that another session running `tsc` into dist/ at the same moment cannot hand a test
// a half-written file.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { envWithoutProxies, exec, onProcessExit, type ExecResult } from './exec.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface CliBuild {
  /** Absolute path of the built cli.js. */
  cli: string;
  /** tsc's diagnostics, if it reported any (it still emits; the caller decides). */
  diagnostics: string;
  /** Removes the build (also done when the test process exits, as a fallback). */
  cleanup(): Promise<void>;
}

/**
 * `npx tsc -p tsconfig.json --outDir <tmp>`, with node_modules and a `"type": "module"`
 * package.json next to the output so the built files resolve their dependencies as dist/ does.
 * Throws if tsc produced no cli.js. Type errors elsewhere (work in progress of other sessions)
 * are returned in `diagnostics`, not thrown.
 */
export async function buildCli(): Promise<CliBuild> {
  const out = await mkdtemp(join(tmpdir(), 'sm-cli-build-'));
  onProcessExit(() => rmSync(out, { recursive: true, force: true }));
  const r = await exec('npx', ['--no-install', 'tsc', '-p', join(REPO_ROOT, 'tsconfig.json'), '--outDir', out], {
    timeoutMs: 120_000,
  });
  const cli = join(out, 'src', 'cli.js');
  if (!existsSync(cli)) throw new Error(`tsc did not produce ${cli} (code ${r.code}):\n${r.stdout}\n${r.stderr}`);
  await writeFile(join(out, 'package.json'), JSON.stringify({ type: 'module' }));
  await symlink(join(REPO_ROOT, 'node_modules'), join(out, 'node_modules'), 'dir');
  return {
    cli,
    diagnostics: r.code === 0 ? '' : `${r.stdout}${r.stderr}`,
    cleanup: () => rm(out, { recursive: true, force: true }),
  };
}

/** Writes `export default <config>` as an .mjs file (what MIRROR_CONFIG names). */
export async function writeConfigFile(path: string, config: Record<string, unknown>): Promise<string> {
  await writeFile(path, `export default ${JSON.stringify(config, null, 2)};\n`);
  return path;
}

/** The environment a user's shell would give: no proxies, no stray MIRROR_* settings, then `extra`. */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = envWithoutProxies();
  for (const key of Object.keys(env)) if (key.startsWith('MIRROR_')) delete env[key];
  return { ...env, ...extra };
}

export interface RunOptions {
  /** Config file, passed as MIRROR_CONFIG. */
  config?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

/** `node cli.js ARGS…` to completion. */
export async function runCli(build: CliBuild, args: string[], opts: RunOptions = {}): Promise<ExecResult> {
  const env = cliEnv({ ...(opts.config ? { MIRROR_CONFIG: opts.config } : {}), ...opts.env });
  return exec(process.execPath, [build.cli, ...args], { env, timeoutMs: opts.timeoutMs ?? 60_000 });
}

export interface ServeProcess {
  child: ChildProcess;
  /** http://127.0.0.1:PORT */
  url: string;
  /** Everything written to stdout so far (the JSON log), split into lines. */
  lines(): string[];
  stderr(): string;
  /** Resolves with the exit code and signal once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `node cli.js serve` and waits until it logs that it is listening (or fails). */
export async function spawnServe(build: CliBuild, opts: RunOptions & { port: number; nodeArgs?: string[] }): Promise<ServeProcess> {
  const env = cliEnv({
    ...(opts.config ? { MIRROR_CONFIG: opts.config } : {}),
    MIRROR_PORT: String(opts.port),
    ...opts.env,
  });
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), build.cli, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  onProcessExit(() => child.kill('SIGKILL'));
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolveExit) => {
    child.once('exit', (code, signal) => resolveExit({ code, signal }));
  });
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  const url = `http://127.0.0.1:${opts.port}`;
  let gone = false;
  void exited.then(() => (gone = true));
  while (!out.includes('sparse-mirror listening')) {
    if (gone) throw new Error(`serve exited before listening:\n${out}\n${err}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`serve did not start listening:\n${out}\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    url,
    lines: () => out.split('\n').filter(Boolean),
    stderr: () => err,
    exited,
  };
}
