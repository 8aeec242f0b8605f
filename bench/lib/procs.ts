// Child processes and temp dirs of the benchmark, all torn down when it ends, however it ends.
// Every child runs in its own process group (detached), so stopping it also stops what it spawned
// (nginx workers); only groups this process created are ever signalled.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Proc {
  name: string;
  child: ChildProcess;
  pid: number;
  logFile?: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM to the process group, SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  running(): boolean;
}

const procs = new Set<Proc>();
const tempDirs = new Set<string>();
const cleanups = new Set<() => void>();
let hooksInstalled = false;

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once('exit', () => {
    for (const p of procs) if (p.running()) killGroup(p.pid, 'SIGKILL');
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
    for (const fn of cleanups) {
      try {
        fn();
      } catch {
        // the others still run
      }
    }
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, cleaning up\n`);
      process.exit(130);
    });
  }
}

/**
 * Runs `fn` when the benchmark exits, however it exits (after its children are killed); for what
 * is neither a child nor a temp dir (a network namespace). It must be synchronous. Returns a
 * function that unregisters it, for when the owner has cleaned up itself.
 */
export function onCleanup(fn: () => void): () => void {
  installHooks();
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Environment without proxy variables: everything here talks to loopback only. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(https?|all|no)_proxy$/i.test(k)) env[k] = v;
  }
  return { ...env, ...extra };
}

/** Spawns a long-running child; stdout and stderr go to `logFile` (or are dropped). */
export function startProc(
  name: string,
  command: string,
  args: string[],
  opts: { logFile?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Proc {
  installHooks();
  const fd = opts.logFile ? openSync(opts.logFile, 'a') : 'ignore';
  const spawnOpts: SpawnOptions = {
    cwd: opts.cwd,
    env: opts.env ?? cleanEnv(),
    stdio: ['ignore', fd, fd],
    detached: true,
  };
  const child = spawn(command, args, spawnOpts);
  if (typeof fd === 'number') closeSync(fd);
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', () => {
      done = true;
      resolve({ code: -1, signal: null });
    });
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
  });
  const proc: Proc = {
    name,
    child,
    pid: child.pid ?? -1,
    logFile: opts.logFile,
    exited,
    running: () => !done && child.pid !== undefined,
    async stop(graceMs = 5000) {
      if (proc.running()) {
        killGroup(proc.pid, 'SIGTERM');
        const timer = setTimeout(() => killGroup(proc.pid, 'SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      // Whatever the group leader left behind (nginx workers, for one).
      killGroup(proc.pid, 'SIGKILL');
      procs.delete(proc);
    },
  };
  procs.add(proc);
  return proc;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

/** Runs a command to completion with a hard timeout; returns its output and wall time. */
export function run(
  command: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; discardStdout?: boolean } = {},
): Promise<RunResult> {
  installHooks();
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(command, args, {
      cwd: opts.cwd,
      env: opts.env ?? cleanEnv(),
      stdio: ['ignore', opts.discardStdout ? 'ignore' : 'pipe', 'pipe'],
      detached: true,
    });
    const proc: Proc = {
      name: command,
      child,
      pid: child.pid ?? -1,
      exited: new Promise(() => {}),
      running: () => child.exitCode === null && child.signalCode === null,
      stop: async () => killGroup(child.pid ?? -1, 'SIGKILL'),
    };
    procs.add(proc);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid ?? -1, 'SIGKILL');
    }, opts.timeoutMs ?? 120_000);
    const finish = (code: number, extra = '') => {
      clearTimeout(timer);
      procs.delete(proc);
      resolve({
        code,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString() + extra,
        ms: performance.now() - started,
        timedOut,
      });
    };
    child.once('error', (e) => finish(-1, `spawn ${command}: ${e.message}`));
    child.once('close', (code) => finish(code ?? -1));
  });
}

export function tempDir(prefix: string): string {
  installHooks();
  const dir = mkdtempSync(join(process.env.BENCH_TMPDIR ?? tmpdir(), `sm-bench-${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...procs].map((p) => p.stop(3000)));
}

export function removeAllTemp(): void {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      if (a === null || typeof a === 'string') return reject(new Error('no port'));
      s.close(() => resolve(a.port));
    });
  });
}

/** Polls `url` until it answers `status`; resolves the milliseconds it took (from `since`). */
export async function waitForHttp(
  url: string,
  opts: { status?: number; timeoutMs?: number; intervalMs?: number; since?: number; proc?: Proc; method?: string } = {},
): Promise<number> {
  const since = opts.since ?? performance.now();
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  while (Date.now() < deadline) {
    if (opts.proc && !opts.proc.running()) throw new Error(`${opts.proc.name} exited before ${url} answered (see ${opts.proc.logFile ?? 'no log'})`);
    try {
      const res = await fetch(url, { method: opts.method ?? 'GET', signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === (opts.status ?? 200)) return performance.now() - since;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
  }
  throw new Error(`${url} did not answer ${opts.status ?? 200} within ${opts.timeoutMs ?? 20_000} ms`);
}

/** `which`, synchronously. */
export function which(bin: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** Peak and current resident set of a process, in bytes (from /proc/<pid>/status). */
export async function memoryOf(pid: number): Promise<{ hwm: number; rss: number } | undefined> {
  const { readFile } = await import('node:fs/promises');
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system, all threads) used so far by one process; 0 once it is gone. */
export async function pidCpuSeconds(pid: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) used so far by every process of a process group (a Proc and its children). */
export async function groupCpuSeconds(pgid: number): Promise<number> {
  const { readdir, readFile } = await import('node:fs/promises');
  let ticks = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      if (Number(f[2]) === pgid) ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // gone meanwhile
    }
  }
  return ticks / 100; // USER_HZ
}
