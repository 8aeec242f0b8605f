// A private containerd daemon (Debian containerd 1.6) plus `ctr` helpers, so integration tests can
// pull through the mirror with a real containerd resolver configured by hosts.toml.
//
// Observed with containerd/ctr 1.6.20 (Debian) here; test/integration/clients.test.ts pins it down:
// - Every request to a hosts.toml host (mirror `[host."…"]` or `server`) whose host:port differs from
//   the image's registry name carries `?ns=<registry>`, URL-encoded: `?ns=docker.io`,
//   `?ns=127.0.0.1%3A5000`. Requests to the registry itself carry none.
// - http:// URLs in hosts.toml are enough for plain HTTP; `--plain-http` is not needed.
// - `ctr images pull` always unpacks (1.6 has no --skip-unpack). We pass `--snapshotter native`: it
//   needs no overlayfs support from the filesystem under the temp dir (overlayfs works in this VM
//   too, but not e.g. on an overlayfs-backed CI container). Unpacking also checks layers against the
//   config's diff_ids. `unpack: false` uses `ctr content fetch` instead (same fetches, no snapshots).
// - Blobs stay in the content store after a pull: pulling the same image again only re-resolves the
//   tag (HEAD). `ctrRemove` garbage-collects synchronously, so the next pull fetches everything.
// - A body cut short is resumed with `Range: bytes=N-` (gives up after 3 retries without progress:
//   `ctr: failed to read expected number of bytes: unexpected EOF`).
// - Error output (stderr, exit code 1):
//   404 on the tag:  `ctr: failed to resolve reference "REF": REF: not found` (body dropped)
//   403 on the tag:  `ctr: failed to resolve reference "REF": pulling from host HOST failed with
//                    status code [manifests TAG]: 403 Forbidden` (resolving uses HEAD: no body)
//   403 on a GET:    `ctr: failed to copy: httpReadSeeker: failed open: unexpected status code
//                    URL: 403 Forbidden - Server message: denied: MESSAGE`
//   404 on a blob:   `ctr: failed to copy: httpReadSeeker: failed open: could not fetch content
//                    descriptor DIGEST (MEDIATYPE) from remote: not found`
//   404 on a manifest by digest: `… failed open: content at URL not found: not found`
//   wrong bytes:     `ctr: failed commit on ref "layer-DIGEST": commit failed: unexpected commit
//                    digest sha256:…, expected DIGEST: failed precondition`
//   refused:         `ctr: failed to resolve reference "REF": failed to do request: Head "URL":
//                    dial tcp HOST: connect: connection refused`
//   With a mirror host in front of an unreachable server, the message is the mirror's (URLs with ?ns=).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { envWithoutProxies, exec, onProcessExit, type ExecResult } from './exec.js';

const CONTAINERD_BIN = process.env.CONTAINERD_BIN ?? 'containerd';
const CTR_BIN = process.env.CTR_BIN ?? 'ctr';
const STARTUP_TIMEOUT_MS = 15_000;
/** Portable across backing filesystems; see the header comment. */
export const SNAPSHOTTER = 'native';

export interface ContainerdHandle {
  /** containerd's gRPC socket, for `ctr -a`. */
  socket: string;
  /** containerd's root directory (content store, snapshots, metadata). */
  root: string;
  /** Last few KB of containerd's log output, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

const liveDaemons = new Set<ChildProcess>();
onProcessExit(() => {
  for (const child of liveDaemons) child.kill('SIGKILL');
});

/** setpriv --pdeathsig also kills containerd when the test process dies from a signal (no 'exit' event). */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

function configToml(dir: string): string {
  const q = JSON.stringify; // TOML basic strings accept JSON string syntax for plain paths
  return [
    'version = 2',
    `root = ${q(join(dir, 'root'))}`,
    `state = ${q(join(dir, 'state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = ${q(join(dir, 'c.sock'))}`,
    '[ttrpc]',
    `  address = ${q(join(dir, 'c.sock.ttrpc'))}`,
    '[debug]',
    `  address = ${q(join(dir, 'debug.sock'))}`,
    '[plugins."io.containerd.internal.v1.opt"]', // default /opt/containerd lies outside the temp dir
    `  path = ${q(join(dir, 'opt'))}`,
    '',
  ].join('\n');
}

export async function startContainerd(): Promise<ContainerdHandle> {
  // Short prefix: unix socket paths are limited to 108 bytes.
  const dir = await mkdtemp(join(tmpdir(), 'sm-ctrd-'));
  const configPath = join(dir, 'config.toml');
  await writeFile(configPath, configToml(dir));
  const socket = join(dir, 'c.sock');

  const daemonArgs = ['--config', configPath, '--log-level', 'warn'];
  const [command, args] = SETPRIV
    ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', CONTAINERD_BIN, ...daemonArgs]]
    : [CONTAINERD_BIN, daemonArgs];
  let output = '';
  const child = spawn(command, args, { env: envWithoutProxies(), stdio: ['ignore', 'pipe', 'pipe'] });
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-8192);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  liveDaemons.add(child);
  onProcessExit(() => rmSync(dir, { recursive: true, force: true })); // runs after the kill above

  let exitReason: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('error', (err) => {
      exitReason = `failed to spawn ${CONTAINERD_BIN}: ${err.message}`;
      resolve();
    });
    child.once('exit', (code, signal) => {
      exitReason = `${CONTAINERD_BIN} exited (code ${code}, signal ${signal})`;
      resolve();
    });
  });
  void exited.then(() => liveDaemons.delete(child));

  const stop = async (): Promise<void> => {
    if (exitReason === undefined) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  let lastError = '';
  while (exitReason === undefined && Date.now() < deadline) {
    if (existsSync(socket)) {
      const r = await exec(CTR_BIN, ['-a', socket, '--connect-timeout', '1s', 'version'], { env: ctrEnv(), timeoutMs: 3000 });
      if (r.code === 0) return { socket, root: join(dir, 'root'), log: () => output, stop };
      lastError = r.stderr.trim();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const reason = exitReason ?? `\`ctr version\` did not succeed within ${STARTUP_TIMEOUT_MS / 1000}s (${lastError || 'no socket'})`;
  await stop();
  const hint = /ENOENT|code 127/.test(reason) ? ' (is the Debian containerd package installed?)' : '';
  throw new Error(`containerd did not start: ${reason}${hint}\n--- containerd output ---\n${output}`);
}

export interface HostsOptions {
  /** `server = …`; containerd's default (https://<registry>, registry-1.docker.io for docker.io) if omitted. */
  server?: string;
  /** `[host."…"]` entries, tried in this order before `server`. */
  mirrors?: string[];
  /** Add to an existing hosts dir instead of creating a new temp dir. */
  dir?: string;
}

/** Writes DIR/<registryName>/hosts.toml (pull+resolve hosts) and returns DIR, for `--hosts-dir`. */
export async function writeHostsDir(registryName: string, opts: HostsOptions): Promise<string> {
  let dir = opts.dir;
  if (dir === undefined) {
    dir = await mkdtemp(join(tmpdir(), 'sm-hosts-'));
    const created = dir;
    onProcessExit(() => rmSync(created, { recursive: true, force: true }));
  }
  const lines: string[] = [];
  if (opts.server !== undefined) lines.push(`server = ${JSON.stringify(opts.server)}`, '');
  // containerd 1.6 rejects a file without a `host` table ("invalid `host` tree") and silently
  // falls back to its defaults, so a server-only file needs an empty one.
  if (!opts.mirrors?.length) lines.push('[host]', '');
  for (const mirror of opts.mirrors ?? []) {
    lines.push(`[host.${JSON.stringify(mirror)}]`, '  capabilities = ["pull", "resolve"]', '');
  }
  // containerd looks up certs.d-style directories named exactly after the registry host[:port].
  await mkdir(join(dir, registryName), { recursive: true });
  await writeFile(join(dir, registryName, 'hosts.toml'), lines.join('\n'));
  return dir;
}

function ctrEnv(): NodeJS.ProcessEnv {
  const env = envWithoutProxies();
  for (const key of ['CONTAINERD_ADDRESS', 'CONTAINERD_NAMESPACE', 'CONTAINERD_SNAPSHOTTER']) delete env[key];
  return env;
}

// ctr draws progress bars with ANSI escapes even when stdout is not a terminal.
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

/** Runs `ctr -a SOCK ARGS…` with a hard timeout; stdout/stderr without ANSI escapes. */
export async function ctr(cd: ContainerdHandle, args: string[], timeoutMs = 60_000): Promise<ExecResult> {
  const r = await exec(CTR_BIN, ['-a', cd.socket, ...args], { env: ctrEnv(), timeoutMs });
  return { ...r, stdout: r.stdout.replace(ANSI, ''), stderr: r.stderr.replace(ANSI, '') };
}

export interface CtrPullOptions {
  hostsDir: string;
  /** e.g. linux/arm64; default: the host platform. */
  platform?: string;
  allPlatforms?: boolean;
  /** false: `ctr content fetch` (content + image record, no snapshots). Default true. */
  unpack?: boolean;
  timeoutMs?: number;
}

/** `ctr images pull --hosts-dir DIR --snapshotter native [--platform P | --all-platforms] REF`. */
export async function ctrPull(cd: ContainerdHandle, ref: string, opts: CtrPullOptions): Promise<ExecResult> {
  const unpack = opts.unpack ?? true;
  const args = unpack ? ['images', 'pull', '--snapshotter', SNAPSHOTTER] : ['content', 'fetch'];
  args.push('--hosts-dir', opts.hostsDir);
  if (opts.allPlatforms) args.push('--all-platforms');
  else if (opts.platform !== undefined) args.push('--platform', opts.platform);
  args.push(ref);
  return ctr(cd, args, opts.timeoutMs ?? 60_000);
}

/** Image references known to containerd. */
export async function ctrImages(cd: ContainerdHandle): Promise<string[]> {
  const r = await ctr(cd, ['images', 'ls', '-q']);
  if (r.code !== 0) throw new Error(`ctr images ls failed: ${r.stderr}`);
  return r.stdout.split('\n').filter((line) => line !== '');
}

/** Digests in containerd's content store (what a pull actually fetched). */
export async function ctrContent(cd: ContainerdHandle): Promise<string[]> {
  const r = await ctr(cd, ['content', 'ls', '-q']);
  if (r.code !== 0) throw new Error(`ctr content ls failed: ${r.stderr}`);
  return r.stdout.split('\n').filter((line) => line !== '');
}

/** Removes images and garbage-collects synchronously, so a later pull fetches all content again. */
export async function ctrRemove(cd: ContainerdHandle, ...refs: string[]): Promise<void> {
  const r = await ctr(cd, ['images', 'rm', '--sync', ...refs]);
  if (r.code !== 0) throw new Error(`ctr images rm failed: ${r.stderr}`);
}
