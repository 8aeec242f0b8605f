// Debian's docker-registry (distribution 2.8) as the upstream, as the anchor (proxy mode), and as
// the plain target registry of a full mirror. The configuration is Debian's default
// (/etc/docker/registry/config.yml: in-memory blob descriptor cache, info logging with the access
// log on) minus auth, plus `proxy.remoteurl` for the anchor. The access log is what counts the
// requests that reach the upstream.
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, startProc, tempDir, waitForHttp, type Proc } from './procs.js';

export interface Distribution {
  name: string;
  url: string;
  host: string;
  storageDir: string;
  logFile: string;
  proc: Proc;
  stop(): Promise<void>;
}

export interface DistributionOptions {
  proxy?: string;
  storageDir?: string;
  /** The address to listen on (default 127.0.0.1). */
  listen?: string;
  /** A prefix for the command, e.g. `ip netns exec <ns>`. */
  wrap?: string[];
}

export async function startDistribution(name: string, opts: DistributionOptions = {}): Promise<Distribution> {
  const work = tempDir(`registry-${name}`);
  const storageDir = opts.storageDir ?? join(work, 'storage');
  const port = await freePort();
  const host = `${opts.listen ?? '127.0.0.1'}:${port}`;
  const config = {
    version: 0.1,
    log: { level: 'info', formatter: 'text', fields: { service: 'registry' } },
    storage: {
      cache: { blobdescriptor: 'inmemory' },
      filesystem: { rootdirectory: storageDir },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: host, secret: 'sparse-mirror-bench', headers: { 'X-Content-Type-Options': ['nosniff'] } },
    ...(opts.proxy ? { proxy: { remoteurl: opts.proxy } } : {}),
  };
  const configPath = join(work, 'config.yml');
  await writeFile(configPath, JSON.stringify(config, null, 2)); // JSON is YAML
  const logFile = join(work, 'registry.log');
  const [command, ...args] = [...(opts.wrap ?? []), process.env.DOCKER_REGISTRY_BIN ?? 'docker-registry', 'serve', configPath];
  const proc = startProc(`docker-registry (${name})`, command!, args, { logFile });
  const url = `http://${host}`;
  await waitForHttp(`${url}/v2/`, { proc, timeoutMs: 20_000 });
  return { name, url, host, storageDir, logFile, proc, stop: () => proc.stop() };
}

/** A position in a log file; `since` reads what was appended after it. */
export async function logMark(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

export async function logSince(file: string, mark: number): Promise<string> {
  const all = await readFile(file);
  return all.subarray(mark).toString('utf8');
}

export interface AccessLine {
  method: string;
  path: string;
  status: number;
  bytes: number;
}

/** Access-log lines (Apache combined format, as distribution writes them). */
export function accessLines(text: string): AccessLine[] {
  const out: AccessLine[] = [];
  const re = /"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP\/[\d.]+" (\d{3}) (\d+|-)/g;
  for (const m of text.matchAll(re)) {
    out.push({ method: m[1]!, path: decodeURIComponent(m[2]!.split('?')[0]!), status: Number(m[3]), bytes: m[4] === '-' ? 0 : Number(m[4]) });
  }
  return out;
}

/** Waits until the access log has stopped growing for `quietMs` (lines are written when a response ends). */
export async function settleLog(file: string, quietMs = 300, maxMs = 10_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  let last = await logMark(file);
  let since = Date.now();
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    const now = await logMark(file);
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
  }
}

/**
 * Waits until distribution holds these blobs in its storage. Its proxy streams a cold blob to the
 * client straight from upstream and stores it with a second, background fetch that can outlive the
 * client's request; measurements that follow must not overlap that work, and store sizes must
 * include it.
 */
export async function waitStored(reg: Distribution, blobs: Array<{ digest: string; size: number }>, timeoutMs = 120_000): Promise<number> {
  const started = performance.now();
  const deadline = Date.now() + timeoutMs;
  for (const b of blobs) {
    const hex = b.digest.slice('sha256:'.length);
    const file = join(reg.storageDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    for (;;) {
      const size = await stat(file).then((s) => s.size, () => -1);
      if (size === b.size) break;
      if (Date.now() > deadline) throw new Error(`${reg.name} did not store ${b.digest} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  return performance.now() - started;
}
