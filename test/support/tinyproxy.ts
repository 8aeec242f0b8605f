// A real forward proxy (Debian tinyproxy) on a loopback port, optionally wanting Basic
// credentials; its log tells which requests went through it.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { envWithoutProxies, onProcessExit } from './exec.js';
import { freePort } from './registry.js';

export interface Tinyproxy {
  /** http://ADDRESS:PORT (no credentials) */
  url: string;
  port: number;
  /** The proxy's log: CONNECT and request lines name where clients went. */
  log(): Promise<string>;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
onProcessExit(() => {
  for (const c of live) c.kill('SIGKILL');
});

export interface TinyproxyOptions {
  basicAuth?: { user: string; password: string };
  /** Address to listen on (default 127.0.0.1); clients from anywhere are allowed. */
  listen?: string;
  /** Wraps the command line, e.g. to run it in a network namespace. */
  wrap?: (argv: string[]) => [string, string[]];
}

export async function startTinyproxy(opts: TinyproxyOptions = {}): Promise<Tinyproxy> {
  const listen = opts.listen ?? '127.0.0.1';
  const dir = await mkdtemp(join(tmpdir(), 'sm-tinyproxy-'));
  onProcessExit(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const logFile = join(dir, 'tinyproxy.log');
  // No ConnectPort lines: CONNECT to any port (registries here listen on ephemeral ones).
  const conf = [
    `Port ${port}`,
    `Listen ${listen}`,
    'Timeout 30',
    `LogFile "${logFile}"`,
    'LogLevel Connect',
    'MaxClients 50',
    ...(listen === '127.0.0.1' ? ['Allow 127.0.0.1'] : []),
    'DisableViaHeader Yes',
    ...(opts.basicAuth ? [`BasicAuth ${opts.basicAuth.user} ${opts.basicAuth.password}`] : []),
    '',
  ].join('\n');
  const confPath = join(dir, 'tinyproxy.conf');
  await writeFile(confPath, conf);
  const [command, args] = (opts.wrap ?? ((argv) => [argv[0]!, argv.slice(1)]))(['tinyproxy', '-d', '-c', confPath]);
  const child = spawn(command, args, { env: envWithoutProxies(), stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  live.add(child);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  void exited.then(() => live.delete(child));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, listen);
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return { url: `http://${listen}:${port}`, port, log: async () => (existsSync(logFile) ? readFile(logFile, 'utf8') : ''), stop };
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`tinyproxy did not start (is the Debian tinyproxy package installed?)\n${output}`);
}
