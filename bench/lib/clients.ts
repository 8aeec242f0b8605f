// Load generators: curl processes for bulk downloads, wrk for request rates, Node clients that
// hash what they receive, and skopeo in a private sandbox.
import { createHash } from 'node:crypto';
import { Agent, request } from 'node:http';
import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { cleanEnv, removeDir, run, tempDir, type RunResult } from './procs.js';

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

export interface Downloads {
  /** Wall time from starting the first client to the last one finishing. */
  ms: number;
  bytes: number;
  /** bytes / ms, in bytes per second. */
  bytesPerSec: number;
  failures: string[];
}

/**
 * `n` curl processes at once, each downloading `url` `repeat` times to /dev/null. `curlArgs` go
 * before the URLs (e.g. `--aws-sigv4` and `-K` with the credentials, for a direct S3 GET).
 */
export async function curlParallel(url: string, n: number, expectBytes: number, repeat = 1, curlArgs: string[] = []): Promise<Downloads> {
  const args = [...curlArgs, '-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download}\\n'];
  for (let i = 1; i < repeat; i++) args.push(url, '-o', '/dev/null');
  args.push(url);
  const started = performance.now();
  const results = await Promise.all(Array.from({ length: n }, () => run('curl', args, { timeoutMs: 600_000 })));
  const ms = performance.now() - started;
  let bytes = 0;
  const failures: string[] = [];
  for (const r of results) {
    for (const line of r.stdout.trim().split('\n')) {
      const [code, size] = line.split(' ');
      bytes += Number(size ?? 0);
      if (code !== '200' || Number(size) !== expectBytes) failures.push(`HTTP ${code}, ${size} bytes`);
    }
    if (r.code !== 0) failures.push(`curl exit ${r.code}: ${r.stderr.trim().slice(0, 200)}`);
  }
  return { ms, bytes, bytesPerSec: (bytes / ms) * 1000, failures };
}

export interface WrkResult {
  requests: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
}

let wrkScripts: string | undefined;

/** wrk with a Lua script that sets the method and headers and prints a JSON summary. */
export async function wrk(
  url: string,
  opts: { method: 'GET' | 'HEAD'; headers?: Record<string, string>; connections: number; threads?: number; seconds: number },
): Promise<WrkResult> {
  wrkScripts ??= tempDir('wrk');
  const script = join(wrkScripts, `${opts.method}-${Object.keys(opts.headers ?? {}).length}-${Math.random().toString(36).slice(2)}.lua`);
  const lines = [`wrk.method = "${opts.method}"`];
  for (const [k, v] of Object.entries(opts.headers ?? {})) lines.push(`wrk.headers["${k}"] = "${v}"`);
  lines.push(
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format("WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"non2xx\\":%d,\\"errors\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d}\\n",',
    '    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))',
    'end',
  );
  await writeFile(script, lines.join('\n') + '\n');
  const threads = Math.min(opts.threads ?? 2, opts.connections);
  const r = await run('wrk', ['-t', String(threads), '-c', String(opts.connections), '-d', `${opts.seconds}s`, '--timeout', '10s', '-s', script, url], {
    timeoutMs: (opts.seconds + 30) * 1000,
  });
  const m = /WRKJSON (\{.*\})/.exec(r.stdout);
  if (!m) throw new Error(`wrk gave no summary (exit ${r.code}): ${r.stdout.slice(-500)} ${r.stderr.slice(-500)}`);
  const j = JSON.parse(m[1]!) as { requests: number; duration_us: number; non2xx: number; errors: number; p50_us: number; p99_us: number };
  return {
    requests: j.requests,
    rps: j.requests / (j.duration_us / 1e6),
    p50Ms: j.p50_us / 1000,
    p99Ms: j.p99_us / 1000,
    non2xx: j.non2xx,
    errors: j.errors,
  };
}

/**
 * ApacheBench for HEAD: wrk 4.1 and autocannon 9 both wait for a body after a HEAD response that
 * carries Content-Length (as a registry's must), so they complete no request at all. ab (-i) does
 * HEAD right; -k keeps connections alive. Its percentiles are whole milliseconds.
 */
export async function ab(url: string, opts: { method: 'HEAD' | 'GET'; headers?: Record<string, string>; connections: number; seconds: number }): Promise<WrkResult> {
  const args = ['-q', '-k', '-r', '-c', String(opts.connections), '-t', String(opts.seconds), '-n', '100000000', '-s', '10'];
  if (opts.method === 'HEAD') args.push('-i');
  for (const [k, v] of Object.entries(opts.headers ?? {})) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const r = await run('ab', args, { timeoutMs: (opts.seconds + 30) * 1000 });
  const num = (re: RegExp) => Number(re.exec(r.stdout)?.[1] ?? NaN);
  const requests = num(/^Complete requests:\s+(\d+)/m);
  if (!Number.isFinite(requests)) throw new Error(`ab gave no summary (exit ${r.code}): ${r.stdout.slice(-500)} ${r.stderr.slice(-500)}`);
  return {
    requests,
    rps: num(/^Requests per second:\s+([\d.]+)/m),
    p50Ms: num(/^\s+50%\s+(\d+)/m),
    p99Ms: num(/^\s+99%\s+(\d+)/m),
    non2xx: num(/^Non-2xx responses:\s+(\d+)/m) || 0,
    errors: num(/^Failed requests:\s+(\d+)/m) || 0,
  };
}

export interface HashedBody {
  status: number;
  bytes: number;
  sha256: string;
  /** Milliseconds from the herd's start to this client's first body byte, and to its last. */
  firstByteMs?: number;
  doneMs?: number;
  error?: string;
}

/**
 * `n` clients GET `url` at the same moment, each hashing the body it receives. Given several
 * URLs (the replicas of one mirror), client i asks `urls[i % urls.length]`.
 */
export async function herd(url: string | string[], n: number, timeoutMs = 300_000): Promise<{ ms: number; bodies: HashedBody[] }> {
  const urls = Array.isArray(url) ? url : [url];
  const agent = new Agent({ keepAlive: false, maxSockets: n });
  const started = performance.now();
  const one = (i: number) =>
    new Promise<HashedBody>((resolve) => {
      const req = request(urls[i % urls.length]!, { agent, timeout: timeoutMs }, (res) => {
        const h = createHash('sha256');
        let bytes = 0;
        let firstByteMs: number | undefined;
        res.on('data', (c: Buffer) => {
          firstByteMs ??= performance.now() - started;
          bytes += c.length;
          h.update(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, sha256: `sha256:${h.digest('hex')}`, firstByteMs, doneMs: performance.now() - started }));
        res.on('error', (e) => resolve({ status: res.statusCode ?? 0, bytes, sha256: '', error: e.message }));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => resolve({ status: 0, bytes: 0, sha256: '', error: e.message }));
      req.end();
    });
  const bodies = await Promise.all(Array.from({ length: n }, (_, i) => one(i)));
  agent.destroy();
  return { ms: performance.now() - started, bodies };
}

// -------------------------------------------------------------------------------------------
// skopeo, isolated: a permissive private policy, an empty registries.conf, a temp HOME.

let skopeoEnv: { policy: string; conf: string; env: NodeJS.ProcessEnv } | undefined;

async function sandbox() {
  if (skopeoEnv) return skopeoEnv;
  const dir = tempDir('skopeo');
  const home = join(dir, 'home');
  const runtime = join(dir, 'run');
  await mkdir(home, { mode: 0o700 });
  await mkdir(runtime, { mode: 0o700 });
  const policy = join(dir, 'policy.json');
  const conf = join(dir, 'registries.conf');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  await writeFile(conf, '');
  skopeoEnv = {
    policy,
    conf,
    env: cleanEnv({
      HOME: home,
      XDG_RUNTIME_DIR: runtime,
      XDG_CONFIG_HOME: join(home, '.config'),
      CONTAINERS_REGISTRIES_CONF: conf,
      REGISTRY_AUTH_FILE: join(runtime, 'auth.json'),
      DOCKER_CONFIG: join(home, '.docker'),
    }),
  };
  return skopeoEnv;
}

export async function skopeo(args: string[], timeoutMs = 300_000): Promise<RunResult> {
  const s = await sandbox();
  return run('skopeo', ['--policy', s.policy, '--registries-conf', s.conf, ...args], { env: s.env, timeoutMs });
}

/**
 * One untimed skopeo pull of a just-pushed image straight from the upstream, to a folder removed
 * again. The first pull of a new image from distribution takes 50–130 ms longer than the next
 * ones on the benchmark machine, whoever makes it (direct, anchor or sparse-mirror: three direct
 * pulls in a row, bench/RESULTS.md 2026-12-04). That cost belongs to the upstream, and falling on
 * whichever pull came first in a round it only added noise to every cold-pull comparison.
 */
export async function warmUpstreamImage(ref: string, platform: { os: string; arch: string }): Promise<void> {
  const dest = tempDir('warm-upstream');
  try {
    await skopeoCopy(ref, `dir:${join(dest, 'image')}`, platform);
  } finally {
    removeDir(dest);
  }
}

/** `skopeo copy` of one platform (or `--all`) from `src` (docker://…) to a fresh dir:. */
export async function skopeoCopy(src: string, dest: string, opts: { arch?: string; os?: string; variant?: string; all?: boolean; destTls?: boolean } = {}): Promise<RunResult> {
  const globals: string[] = [];
  if (opts.os) globals.push('--override-os', opts.os);
  if (opts.arch) globals.push('--override-arch', opts.arch);
  if (opts.variant) globals.push('--override-variant', opts.variant);
  const args = [...globals, 'copy', '--retry-times', '0', '--src-tls-verify=false'];
  if (dest.startsWith('docker://')) args.push('--dest-tls-verify=false');
  if (opts.all) args.push('--all');
  args.push(src, dest);
  const r = await skopeo(args);
  if (r.code !== 0) throw new Error(`skopeo copy ${src} ${dest} failed (exit ${r.code}): ${r.stderr.trim().slice(-600)}`);
  return r;
}

/** GET (or HEAD) of a manifest with every manifest type accepted; throws unless 200. */
export async function getManifest(base: string, repo: string, ref: string, method: 'GET' | 'HEAD' = 'GET'): Promise<{ digest: string; bytes: Buffer }> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${ref}`, { method, headers: { accept: MANIFEST_ACCEPT } });
  const bytes = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`${method} ${base}/v2/${repo}/manifests/${ref}: ${res.status} ${bytes.toString().slice(0, 300)}`);
  return { digest: res.headers.get('docker-content-digest') ?? '', bytes };
}

/** Many curl processes at once, one URL each; per-URL expected sizes. */
export async function curlEach(urls: string[], expectBytes: number): Promise<Downloads> {
  const started = performance.now();
  const results = await Promise.all(
    urls.map((u) => run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download}\\n', u], { timeoutMs: 900_000 })),
  );
  const ms = performance.now() - started;
  let bytes = 0;
  const failures: string[] = [];
  for (const r of results) {
    const [code, size] = r.stdout.trim().split(' ');
    bytes += Number(size ?? 0);
    if (code !== '200' || Number(size) !== expectBytes) failures.push(`HTTP ${code}, ${size} bytes ${r.stderr.trim().slice(0, 200)}`);
  }
  return { ms, bytes, bytesPerSec: (bytes / ms) * 1000, failures };
}
