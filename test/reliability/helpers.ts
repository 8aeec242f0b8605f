// Shared by the reliability suite: raw HTTP requests that report exactly what arrived, a seeded
// PRNG, a re-hash of the store and the figures line every case prints.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { request, type IncomingHttpHeaders } from 'node:http';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestMirror } from '../support/mirror.js';
export { settled } from '../support/mirror.js';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export const OCI_CODES = [
  'BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN', 'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED', 'TOOMANYREQUESTS',
];

/** Prints one `RELIABILITY <case>: k=v …` line (the README copies these). */
export function report(name: string, figures: Record<string, string | number | boolean>): void {
  const parts = Object.entries(figures).map(([k, v]) => `${k}=${v}`);
  console.log(`RELIABILITY ${name}: ${parts.join(' ')}`);
}

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function seededRandom(seed: number): { next(): number; int(lo: number, hi: number): number; pick<T>(xs: readonly T[]): T; bool(p?: number): boolean } {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    /** Inclusive at both ends. */
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!,
    bool: (p = 0.5) => next() < p,
  };
}

export function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export interface Got {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The whole declared body arrived and the response ended normally. */
  complete: boolean;
  /** A connection error before any response, or a timeout. */
  error?: string;
  ms: number;
}

/**
 * One request over its own connection; the path is sent exactly as given (no normalisation).
 * Never rejects: what arrived (or the error) is the result. Bounded by `timeoutMs`.
 */
export function httpRequest(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; path?: string; timeoutMs?: number; abortAfterBytes?: number; body?: Buffer } = {},
): Promise<Got> {
  const started = performance.now();
  const u = new URL(url);
  return new Promise((resolve) => {
    let done = false;
    const finish = (g: Omit<Got, 'ms'>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ...g, ms: performance.now() - started });
    };
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        path: opts.path ?? u.pathname + u.search,
        method: opts.method ?? 'GET',
        headers: opts.headers,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let received = 0;
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          received += c.length;
          if (opts.abortAfterBytes !== undefined && received >= opts.abortAfterBytes) req.destroy();
        });
        res.on('error', () => {}); // 'aborted' when the server cuts the body short; 'close' reports it
        res.on('close', () => finish({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete }));
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      finish({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, error: `timed out after ${opts.timeoutMs ?? 20_000} ms` });
    }, opts.timeoutMs ?? 20_000);
    req.on('error', (e) => finish({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, error: e.message }));
    req.end(opts.body);
  });
}

/** A response that claims to be a whole blob and delivered all of it. */
export function isCompleteBody(g: Got): boolean {
  const declared = Number(g.headers['content-length'] ?? NaN);
  return g.complete && g.status === 200 && Number.isFinite(declared) && g.body.length === declared;
}

/** The OCI error document of a response, or undefined if the body is not one. */
export function ociError(g: Got): { code: string; message: string } | undefined {
  try {
    const body = JSON.parse(g.body.toString('utf8')) as { errors?: Array<{ code: string; message: string }> };
    const e = body.errors?.[0];
    return e && typeof e.code === 'string' && typeof e.message === 'string' ? e : undefined;
  } catch {
    return undefined;
  }
}

/** Every regular file under `dir` (absolute paths); none if it does not exist. */
export async function listFiles(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

export interface Rehash {
  files: number;
  bytes: number;
  /** Files whose content does not hash to their name, or whose name is no digest. */
  bad: string[];
  digests: Set<string>;
}

/** Re-hashes every file under `<dataDir>/blobs/<alg>/<2 hex>/<hex>` against its name. */
export async function rehashStore(dataDir: string): Promise<Rehash> {
  const root = join(dataDir, 'blobs');
  const out: Rehash = { files: 0, bytes: 0, bad: [], digests: new Set() };
  for (const file of await listFiles(root)) {
    const parts = relative(root, file).split('/');
    const [alg, prefix, hex] = parts;
    if (parts.length !== 3 || alg !== 'sha256' || !hex || !/^[a-f0-9]{64}$/.test(hex) || prefix !== hex.slice(0, 2)) {
      out.bad.push(`${file}: not a digest path`);
      continue;
    }
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(file)) {
      hash.update(chunk as Buffer);
      out.bytes += (chunk as Buffer).length;
    }
    out.files++;
    if (hash.digest('hex') !== hex) out.bad.push(`${file}: content does not match its name`);
    else out.digests.add(`sha256:${hex}`);
  }
  return out;
}

export function storedPath(dataDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}
