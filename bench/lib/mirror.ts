// sparse-mirror as production runs it: `node dist/src/cli.js serve` in its own process, with a
// TypeScript config file (loaded through jiti, like mirror.config.ts) and the default log level
// (info: one JSON line per request, to a file here). BENCH_MIRROR_CLI points at another build
// (a scratch copy with a change under test) for A/B runs.
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { cleanEnv, freePort, run, startProc, tempDir, waitForHttp, type Proc, type RunResult } from './procs.js';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..', '..');
export const MIRROR_CLI = resolve(process.env.BENCH_MIRROR_CLI ?? join(REPO_ROOT, 'dist', 'src', 'cli.js'));

export interface MirrorOptions {
  upstream: string;
  platforms?: string[];
  dataDir?: string;
  logLevel?: 'debug' | 'info' | 'warn' | 'error' | 'silent';
  /** Extra config keys (merged at the top level). */
  extra?: Record<string, unknown>;
  nodeArgs?: string[];
  /** The port to listen on (default: a free one); a replica's peers must know it before it starts. */
  port?: number;
  /** Extra environment for the process. */
  env?: NodeJS.ProcessEnv;
  /** Another build's dist/src/cli.js (an A/B of two builds); MIRROR_CLI otherwise. */
  cli?: string;
}

export interface SparseMirror {
  url: string;
  host: string;
  dataDir: string;
  configPath: string;
  logFile: string;
  proc: Proc;
  /** Spawn to first 200 on /v2/, in milliseconds. */
  startupMs: number;
  stop(): Promise<void>;
}

export async function writeMirrorConfig(dir: string, opts: MirrorOptions & { dataDir: string; port?: number }): Promise<string> {
  const config = {
    host: '127.0.0.1',
    port: opts.port ?? 5000,
    dataDir: opts.dataDir,
    platforms: opts.platforms ?? ['linux/amd64', 'linux/arm64'],
    upstreams: [{ url: opts.upstream }],
    log: { level: opts.logLevel ?? 'info' },
    // BENCH_MIRROR_CONFIG: config keys (JSON) for every sparse-mirror of the run, an A/B of a setting.
    ...(JSON.parse(process.env.BENCH_MIRROR_CONFIG || '{}') as Record<string, unknown>),
    ...opts.extra,
  };
  const path = join(dir, 'mirror.config.ts');
  await writeFile(path, `// written by the benchmark\nexport default ${JSON.stringify(config, null, 2)};\n`);
  return path;
}

export async function startSparseMirror(name: string, opts: MirrorOptions): Promise<SparseMirror> {
  const work = tempDir(`mirror-${name}`);
  const dataDir = opts.dataDir ?? join(work, 'data');
  const port = opts.port ?? (await freePort());
  const configPath = await writeMirrorConfig(work, { ...opts, dataDir, port });
  const logFile = join(work, 'mirror.log');
  const started = performance.now();
  const proc = startProc(`sparse-mirror (${name})`, process.execPath, [...(opts.nodeArgs ?? []), opts.cli ?? MIRROR_CLI, 'serve', '--config', configPath], {
    logFile,
    cwd: work,
    env: opts.env ? cleanEnv(opts.env) : undefined,
  });
  const url = `http://127.0.0.1:${port}`;
  const startupMs = await waitForHttp(`${url}/v2/`, { proc, since: started, intervalMs: 5, timeoutMs: 30_000 });
  return { url, host: `127.0.0.1:${port}`, dataDir, configPath, logFile, proc, startupMs, stop: () => proc.stop(15_000) };
}

/** Runs a CLI command of the mirror (prefetch, ls, …) against a config file. */
export function mirrorCli(args: string[], configPath: string, opts: { timeoutMs?: number; discardStdout?: boolean } = {}): Promise<RunResult> {
  return run(process.execPath, [MIRROR_CLI, ...args, '--config', configPath], { timeoutMs: opts.timeoutMs ?? 300_000, discardStdout: opts.discardStdout });
}

/**
 * Waits until the mirror has no blob download in flight: every blob it fetched is flushed, renamed
 * into place and recorded (its flush waits for a pause in downloads). What follows, the next
 * pull or a CPU reading, then neither overlaps nor misses that work.
 */
export async function waitSettled(url: string, opts: { timeoutMs?: number; olderBuild?: boolean } = {}): Promise<void> {
  const until = performance.now() + (opts.timeoutMs ?? 60_000);
  for (;;) {
    const text = await (await fetch(`${url}/metrics`)).text();
    const m = /^sparse_mirror_blob_downloads_in_flight (\d+)/m.exec(text);
    // A build from before the gauge (an A/B's base) flushed each blob as it came: a pause will do.
    if (!m && opts.olderBuild) return new Promise((res) => setTimeout(res, 100));
    if (!m) throw new Error(`${url}/metrics reports no blob downloads in flight`);
    if (m[1] === '0') return;
    if (performance.now() > until) throw new Error(`${url} still had ${m[1]} blob downloads in flight after ${opts.timeoutMs ?? 60_000} ms`);
    await new Promise((res) => setTimeout(res, 20));
  }
}
