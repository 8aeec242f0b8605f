// A private Docker daemon (Debian docker.io 20.10) with its state in a temp dir, and a `docker`
// helper bound to its socket. Started as in the facts notes: vfs storage, no iptables, no
// bridge, its own containerd. Observed here with Docker 20.10.24:
// - `--registry-mirror URL` is used for Docker Hub images only; on any error from the mirror
//   dockerd moves on to Docker Hub (moby's continueOnError) and prints only that failure.
//   Tests give dockerd HTTPS_PROXY pointing at a trap so that fallback never leaves the machine
//   (no DNS either: the proxy would resolve the name), and NO_PROXY for loopback.
// - Named as the registry (`docker pull 127.0.0.1:PORT/library/x`) there is no fallback.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { envWithoutProxies, exec, onProcessExit, type ExecResult } from './exec.js';

/** The Debian client; another `docker` may come first on PATH. */
export const DOCKER_BIN = process.env.DOCKER_BIN ?? '/usr/bin/docker';
const DOCKERD_BIN = process.env.DOCKERD_BIN ?? 'dockerd';
const STARTUP_TIMEOUT_MS = 60_000;
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

export interface DockerdOptions {
  registryMirrors?: string[];
  insecureRegistries?: string[];
  /** HTTPS_PROXY/HTTP_PROXY for dockerd's own registry traffic (NO_PROXY covers loopback). */
  proxy?: string;
}

export interface DockerdHandle {
  socket: string;
  /** The daemon's log so far (the mirror's messages end up here, not in the client's output). */
  log(): string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
onProcessExit(() => {
  for (const child of live) child.kill('SIGKILL');
});

/** Lazily unmounts every mount point below `dir` (deepest first), as /proc/self/mounts lists them. */
async function unmountUnder(dir: string): Promise<void> {
  const mounts = await readFile('/proc/self/mounts', 'utf8').catch(() => '');
  const points = mounts
    .split('\n')
    .map((l) => l.split(' ')[1])
    .filter((p): p is string => p !== undefined && p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await exec('umount', ['-l', p]).catch(() => undefined);
}

export async function startDockerd(opts: DockerdOptions = {}): Promise<DockerdHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'sm-dkr-'));
  const socket = join(dir, 'd.sock');
  const args = [
    '--storage-driver', 'vfs', '--iptables=false', '--ip6tables=false', '--bridge=none',
    '--data-root', join(dir, 'data'), '--exec-root', join(dir, 'exec'), '--pidfile', join(dir, 'd.pid'),
    '-H', `unix://${socket}`, '--config-file', join(dir, 'none.json'),
    ...(opts.registryMirrors ?? []).flatMap((m) => ['--registry-mirror', m]),
    ...(opts.insecureRegistries ?? []).flatMap((r) => ['--insecure-registry', r]),
  ];
  // An empty daemon.json of its own: never the machine's /etc/docker/daemon.json.
  await writeFile(join(dir, 'none.json'), '{}');
  const env = envWithoutProxies(
    opts.proxy ? { HTTPS_PROXY: opts.proxy, HTTP_PROXY: opts.proxy, NO_PROXY: '127.0.0.1,localhost' } : {},
  );
  const [command, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', DOCKERD_BIN, ...args]] : [DOCKERD_BIN, args];
  let output = '';
  const child = spawn(command, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-65536);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  live.add(child);
  onProcessExit(() => rmSync(dir, { recursive: true, force: true }));
  let exitReason: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('error', (e) => {
      exitReason = `failed to spawn ${DOCKERD_BIN}: ${e.message}`;
      resolve();
    });
    child.once('exit', (code, signal) => {
      exitReason = `dockerd exited (code ${code}, signal ${signal})`;
      resolve();
    });
  });
  void exited.then(() => live.delete(child));
  const stop = async (): Promise<void> => {
    if (exitReason === undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    }
    // A container run with --network host leaves exec/netns/default bind-mounted after the
    // daemon exits: unmount what is still mounted under the dir, or rm fails and gigabytes of
    // vfs layers stay behind. Then say so if the dir still cannot go.
    await unmountUnder(dir);
    await rm(dir, { recursive: true, force: true }).catch((e: Error) => {
      process.stderr.write(`dockerd test helper: could not remove ${dir}: ${e.message}\n`);
    });
  };
  const handle: DockerdHandle = { socket, log: () => output, stop };
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (exitReason === undefined && Date.now() < deadline) {
    if (existsSync(socket) && (await docker(handle, ['version', '--format', '{{.Server.Version}}'], 5000)).code === 0) return handle;
    await new Promise((r) => setTimeout(r, 200));
  }
  await stop();
  throw new Error(`dockerd did not start: ${exitReason ?? 'timeout'}\n--- dockerd output ---\n${output.slice(-4000)}`);
}

/** `docker -H unix://SOCK ARGS…` with a hard timeout. */
export function docker(d: DockerdHandle, args: string[], timeoutMs = 120_000): Promise<ExecResult> {
  return exec(DOCKER_BIN, ['-H', `unix://${d.socket}`, ...args], { env: envWithoutProxies({ DOCKER_CONFIG: join(d.socket, '..', 'client') }), timeoutMs });
}
