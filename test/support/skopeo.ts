// skopeo 1.9 in an isolated environment: a permissive private policy.json, an empty registries.conf,
// and a temp HOME/XDG dirs so no user or system auth file, mirror or policy setting leaks in.
// (The system drop-in dir /etc/containers/registries.conf.d still applies; on Debian it only holds
// short-name aliases, which never matter for the fully qualified refs tests use.)
import { rmSync } from 'node:fs';
import { mkdtemp, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { envWithoutProxies, exec, onProcessExit, type ExecResult } from './exec.js';

const SKOPEO_BIN = process.env.SKOPEO_BIN ?? 'skopeo';

interface Sandbox {
  policy: string;
  registriesConf: string;
  env: NodeJS.ProcessEnv;
}

let sandbox: Promise<Sandbox> | undefined;

/** Created once per test process, removed when it exits. */
function getSandbox(): Promise<Sandbox> {
  sandbox ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sm-skopeo-'));
    onProcessExit(() => rmSync(dir, { recursive: true, force: true }));
    const home = join(dir, 'home');
    const runtime = join(dir, 'run');
    await mkdir(home, { mode: 0o700 });
    await mkdir(runtime, { mode: 0o700 });
    const policy = join(dir, 'policy.json');
    const registriesConf = join(dir, 'registries.conf');
    await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    await writeFile(registriesConf, '');
    const env = envWithoutProxies({
      HOME: home,
      XDG_RUNTIME_DIR: runtime,
      XDG_CONFIG_HOME: join(home, '.config'),
      CONTAINERS_REGISTRIES_CONF: registriesConf,
      REGISTRY_AUTH_FILE: join(runtime, 'auth.json'), // does not exist: anonymous unless creds are passed
      DOCKER_CONFIG: join(home, '.docker'),
    });
    return { policy, registriesConf, env };
  })();
  return sandbox;
}

/** `skopeo --policy P --registries-conf R ARGS…` with a hard timeout (default 60 s). */
export async function skopeo(args: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
  const { policy, registriesConf, env } = await getSandbox();
  // --registries-conf is a hidden global flag in skopeo 1.9; the env var above covers it too.
  return exec(SKOPEO_BIN, ['--policy', policy, '--registries-conf', registriesConf, ...args], {
    env,
    timeoutMs: opts.timeoutMs ?? 60_000,
  });
}

export interface SkopeoCopyOptions {
  /** Platform to pick from an index (skopeo's --override-os/arch/variant). */
  os?: string;
  arch?: string;
  variant?: string;
  /** Copy the index and every platform (`--all`). */
  all?: boolean;
  /** user:password for the source registry. */
  creds?: string;
  timeoutMs?: number;
}

/** `skopeo copy docker://… dir:DEST` over plain HTTP. */
export async function skopeoCopyToDir(src: string, dest: string, opts: SkopeoCopyOptions = {}): Promise<ExecResult> {
  const globals: string[] = [];
  if (opts.os !== undefined) globals.push('--override-os', opts.os);
  if (opts.arch !== undefined) globals.push('--override-arch', opts.arch);
  if (opts.variant !== undefined) globals.push('--override-variant', opts.variant);
  const args = [...globals, 'copy', '--src-tls-verify=false'];
  if (opts.all) args.push('--all');
  if (opts.creds !== undefined) args.push('--src-creds', opts.creds);
  args.push(src, `dir:${dest}`);
  return skopeo(args, { timeoutMs: opts.timeoutMs });
}

/** Exact manifest bytes as served for `ref` (docker://HOST/repo:tag or @digest); throws on failure. */
export async function skopeoInspectRaw(ref: string, opts: { creds?: string; timeoutMs?: number } = {}): Promise<Buffer> {
  const args = ['inspect', '--raw', '--tls-verify=false'];
  if (opts.creds !== undefined) args.push('--creds', opts.creds);
  args.push(ref);
  const r = await skopeo(args, { timeoutMs: opts.timeoutMs });
  if (r.code !== 0) throw new Error(`skopeo inspect --raw ${ref} failed (code ${r.code}): ${r.stderr.trim()}`);
  return r.stdoutBytes;
}
