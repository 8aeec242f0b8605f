// Runs a short-lived CLI (ctr, skopeo) to completion with a hard timeout, so a hung client
// fails a test instead of stalling the whole run.
import { spawn } from 'node:child_process';

export interface ExecResult {
  /** Exit code; -1 if the process was killed by a signal (e.g. on timeout) or could not be spawned. */
  code: number;
  stdout: string;
  stderr: string;
  /** Raw stdout, for byte-exact output such as `skopeo inspect --raw`. */
  stdoutBytes: Buffer;
  timedOut: boolean;
}

export interface ExecOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

const PROXY_VARS = ['http_proxy', 'https_proxy', 'all_proxy', 'no_proxy'];

/** The current environment without proxy settings (Go clients would otherwise honour them). */
export function envWithoutProxies(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!PROXY_VARS.includes(key.toLowerCase())) env[key] = value;
  }
  return { ...env, ...extra };
}

export async function exec(command: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve) => {
    const child = spawn(command, args, { env: opts.env ?? envWithoutProxies(), stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const finish = (code: number, extraStderr = ''): void => {
      clearTimeout(timer);
      const stdoutBytes = Buffer.concat(out);
      let stderr = Buffer.concat(err).toString() + extraStderr;
      if (timedOut) stderr += `\n[killed after ${timeoutMs} ms timeout]`;
      resolve({ code, stdout: stdoutBytes.toString(), stderr, stdoutBytes, timedOut });
    };
    child.once('error', (e) => finish(-1, `failed to spawn ${command}: ${e.message}`));
    // 'close' (not 'exit') so that all piped output has been read.
    child.once('close', (code) => finish(code ?? -1));
  });
}

const exitCallbacks: Array<() => void> = [];

/**
 * Runs `fn` (synchronously) when the test process exits, including when vitest's forks pool ends
 * the worker with SIGTERM, which would otherwise skip 'exit' handlers.
 */
export function onProcessExit(fn: () => void): void {
  if (exitCallbacks.length === 0) {
    process.once('exit', () => {
      for (const callback of exitCallbacks.splice(0)) {
        try {
          callback();
        } catch {
          // best effort: keep cleaning up
        }
      }
    });
    process.once('SIGTERM', () => process.exit(143));
  }
  exitCallbacks.push(fn);
}
