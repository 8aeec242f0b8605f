// In-process fake of a registry's read API, serving an in-memory content map, with knobs for
// fault injection (truncated or corrupt bodies, error statuses, latency, outages) and a request log.
// Manifests are served as stored, whatever the Accept header says. Fault rules apply in the order
// they were added; the first live match wins.
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { MEDIA_TYPES, parsePlatform, sha256, tarWithOneFile, type Format, type PushedChild, type PushedIndex } from './images.js';

export interface RecordedRequest {
  method: string;
  /** Path without query string. */
  path: string;
  /** Raw request target, including any query string (e.g. `?ns=docker.io`). */
  url: string;
  headers: IncomingHttpHeaders;
}

/** Matched against the request path (without query string); a string matches as a substring. */
export type PathPattern = RegExp | string;

export interface FailOptions {
  /** Only requests with this method (e.g. 'GET' to let HEAD through). Default: any. */
  method?: string;
  /** How many matching requests fail before the rule expires. Default: all. */
  times?: number;
  /** OCI error code; default derived from the status (404 → MANIFEST_UNKNOWN/BLOB_UNKNOWN, 403 → DENIED, …). */
  code?: string;
  message?: string;
  /** Extra response headers, e.g. Retry-After or WWW-Authenticate. */
  headers?: Record<string, string>;
  /** Raw body instead of an OCI error document. */
  body?: string;
}

export interface FakeUpstream {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT */
  host: string;
  /** Stores a manifest; a non-null ref that is not a digest also tags it. Returns its digest. */
  addManifest(repo: string, ref: string | null, bytes: Buffer, mediaType: string): string;
  tag(repo: string, tag: string, digest: string): void;
  addBlob(repo: string, bytes: Buffer): string;
  /**
   * An index with one single-layer image (unpackable tar+gzip) per platform, tagged `tag`; same
   * shape as images.ts's pushMultiPlatformImage. Content is deterministic per repo/tag/platform.
   */
  addImage(repo: string, tag: string, opts?: { platforms?: string[]; format?: Format }): PushedIndex;
  /**
   * GET of this content sends the full Content-Length, then closes the connection after `offset` body
   * bytes of that response (also for Range requests). Each cut response uses up one of `times`.
   */
  truncateAt(digest: string, offset: number, times?: number): void;
  /** GET of this content serves other bytes of the same length (Docker-Content-Digest unchanged). */
  corrupt(digest: string, times?: number): void;
  failWith(pattern: PathPattern, status: number, opts?: number | FailOptions): void;
  /** Waits `ms` before answering (Infinity: never answers) the next `times` matching requests. */
  delay(pattern: PathPattern, ms: number, times?: number): void;
  /** Sends bodies `bytesPerTick` at a time, one chunk every `tickMs`. */
  throttle(pattern: PathPattern, bytesPerTick: number, tickMs?: number): void;
  /**
   * 'refuse' (default): stops listening, so connects fail with ECONNREFUSED (the port is free
   * meanwhile; nothing else on loopback is likely to grab it);
   * 'reset': keeps accepting but destroys each connection at once. Open connections are dropped.
   */
  down(mode?: 'refuse' | 'reset'): Promise<void>;
  /** Serves again on the same port. */
  up(): Promise<void>;
  requests: RecordedRequest[];
  /** Number of logged requests with this method ('*' for any) whose url (incl. query) contains `substring`. */
  count(method: string, substring: string): number;
  /** Removes all fault rules. */
  clearFaults(): void;
  /** Clears the request log and all fault rules; content stays. */
  reset(): void;
  stop(): Promise<void>;
}

interface Repo {
  manifests: Map<string, { bytes: Buffer; mediaType: string }>;
  tags: Map<string, string>;
  blobs: Map<string, Buffer>;
}

interface ContentRule {
  digest: string;
  remaining: number;
}

interface PathRule {
  pattern: PathPattern;
  remaining: number;
}

function matches(pattern: PathPattern, path: string): boolean {
  return typeof pattern === 'string' ? path.includes(pattern) : pattern.test(path);
}

/** Returns the first live rule matching `test` and consumes one use of it. */
function take<T extends { remaining: number }>(rules: T[], test: (rule: T) => boolean): T | undefined {
  const rule = rules.find((r) => r.remaining > 0 && test(r));
  if (rule) rule.remaining -= 1;
  return rule;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function defaultErrorCode(status: number, path: string): string {
  if (status === 401) return 'UNAUTHORIZED';
  if (status === 403) return 'DENIED';
  if (status === 429) return 'TOOMANYREQUESTS';
  if (status === 404) return path.includes('/blobs/') ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN';
  return 'UNSUPPORTED';
}

function errorBody(code: string, message: string): string {
  return JSON.stringify({ errors: [{ code, message, detail: null }] });
}

export async function startFakeUpstream(): Promise<FakeUpstream> {
  const repos = new Map<string, Repo>();
  const requests: RecordedRequest[] = [];
  let truncations: Array<ContentRule & { offset: number }> = [];
  let corruptions: ContentRule[] = [];
  let failures: Array<PathRule & { status: number; opts: FailOptions }> = [];
  let delays: Array<PathRule & { ms: number }> = [];
  let throttles: Array<{ pattern: PathPattern; bytesPerTick: number; tickMs: number }> = [];
  let mode: 'up' | 'refuse' | 'reset' = 'up';
  const sockets = new Set<Socket>();

  const repo = (name: string): Repo => {
    let r = repos.get(name);
    if (!r) {
      r = { manifests: new Map(), tags: new Map(), blobs: new Map() };
      repos.set(name, r);
    }
    return r;
  };

  const sendError = (res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void => {
    const body = errorBody(code, message);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...headers });
    res.end(res.req.method === 'HEAD' ? undefined : body);
  };

  /** Serves stored content (or a Range of it) honouring corruption, truncation and throttling. */
  const sendContent = async (req: IncomingMessage, res: ServerResponse, path: string, digest: string, full: Buffer, headers: Record<string, string | number>): Promise<void> => {
    let start = 0;
    let end = full.length; // exclusive
    let status = 200;
    const range = req.headers.range;
    if (range !== undefined) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      start = m ? Number(m[1]) : NaN;
      end = m?.[2] ? Math.min(Number(m[2]) + 1, full.length) : full.length;
      if (!(start < end)) {
        res.writeHead(416, { 'Content-Range': `bytes */${full.length}` });
        res.end();
        return;
      }
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end - 1}/${full.length}`;
    }
    res.writeHead(status, { ...headers, 'Content-Length': end - start, 'Docker-Content-Digest': digest });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    let body = full;
    if (take(corruptions, (r) => r.digest === digest)) body = Buffer.from(full.map((b) => b ^ 0xff));
    // `offset` counts bytes of this response (a resumed Range request is cut again, `times` permitting).
    const truncation = take(truncations, (r) => r.digest === digest);
    const bytes = body.subarray(start, truncation ? Math.min(start + truncation.offset, end) : end);
    const throttle = throttles.find((r) => matches(r.pattern, path));
    const chunkSize = Math.max(1, throttle ? throttle.bytesPerTick : bytes.length);
    if (truncation) res.flushHeaders(); // even a cut at 0 bytes must send the headers first
    for (let offset = 0; offset < bytes.length; offset += chunkSize) {
      if (res.destroyed) return;
      if (throttle && offset > 0) await sleep(throttle.tickMs);
      await new Promise<void>((resolve) => res.write(bytes.subarray(offset, offset + chunkSize), () => resolve()));
    }
    if (!truncation) return void res.end();
    // Close only after the partial body has been flushed, so the client really gets those bytes.
    const socket = res.socket;
    socket?.end(() => socket.destroy());
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = req.url ?? '/';
    const path = url.split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    requests.push({ method, path, url, headers: req.headers });

    const delayRule = take(delays, (r) => matches(r.pattern, path));
    if (delayRule) {
      if (delayRule.ms === Infinity) return; // never answer; stop() drops the connection
      await sleep(delayRule.ms);
    }
    const failure = take(failures, (r) => matches(r.pattern, path) && (r.opts.method ?? method) === method);
    if (failure) {
      const { status, opts } = failure;
      if (opts.body !== undefined) {
        res.writeHead(status, { 'Content-Length': Buffer.byteLength(opts.body), ...opts.headers });
        res.end(method === 'HEAD' ? undefined : opts.body);
      } else {
        const code = opts.code ?? defaultErrorCode(status, path);
        sendError(res, status, code, opts.message ?? `injected ${status}`, opts.headers);
      }
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') return sendError(res, 405, 'UNSUPPORTED', 'read-only fake registry');

    if (path === '/v2/' || path === '/v2') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2, 'Docker-Distribution-Api-Version': 'registry/2.0' });
      res.end(method === 'HEAD' ? undefined : '{}');
      return;
    }
    const content = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    if (content) {
      const [, name = '', kind, ref = ''] = content;
      const r = repos.get(name);
      if (kind === 'manifests') {
        const digest = ref.includes(':') ? ref : r?.tags.get(ref);
        const manifest = digest === undefined ? undefined : r?.manifests.get(digest);
        if (!manifest || digest === undefined) return sendError(res, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${name}:${ref}`);
        return sendContent(req, res, path, digest, manifest.bytes, { 'Content-Type': manifest.mediaType });
      }
      const blob = r?.blobs.get(ref);
      if (!blob) return sendError(res, 404, 'BLOB_UNKNOWN', `blob unknown to registry: ${ref}`);
      return sendContent(req, res, path, ref, blob, { 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes' });
    }
    const tagsList = /^\/v2\/(.+)\/tags\/list$/.exec(path);
    if (tagsList) {
      const name = tagsList[1] ?? '';
      const r = repos.get(name);
      if (!r) return sendError(res, 404, 'NAME_UNKNOWN', `repository name not known to registry: ${name}`);
      const params = new URL(url, 'http://fake').searchParams;
      const last = params.get('last');
      const n = params.has('n') ? Number(params.get('n')) : Infinity;
      const all = [...r.tags.keys()].sort().filter((t) => last === null || t > last);
      const tags = all.slice(0, n);
      const headers: Record<string, string> = { 'Content-Type': 'application/json' };
      if (tags.length < all.length) headers.Link = `</v2/${name}/tags/list?n=${n}&last=${tags.at(-1)}>; rel="next"`;
      const body = JSON.stringify({ name, tags });
      res.writeHead(200, { ...headers, 'Content-Length': Buffer.byteLength(body) });
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }
    sendError(res, 404, 'UNSUPPORTED', `not implemented by fake upstream: ${path}`);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendError(res, 500, 'UNKNOWN', String(err));
      else res.destroy();
    });
  });
  server.on('connection', (socket) => {
    if (mode === 'reset') {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  const listen = (port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  const closeListener = (): Promise<void> => new Promise((resolve) => server.close(() => resolve()));
  const dropConnections = (): void => {
    for (const socket of sockets) socket.destroy();
  };

  await listen(0);
  const port = (server.address() as AddressInfo).port;
  const host = `127.0.0.1:${port}`;

  const addManifest = (repoName: string, ref: string | null, bytes: Buffer, mediaType: string): string => {
    const digest = sha256(bytes);
    repo(repoName).manifests.set(digest, { bytes, mediaType });
    if (ref !== null && !ref.includes(':')) repo(repoName).tags.set(ref, digest);
    return digest;
  };
  const addBlob = (repoName: string, bytes: Buffer): string => {
    const digest = sha256(bytes);
    repo(repoName).blobs.set(digest, bytes);
    return digest;
  };
  const addImage = (repoName: string, tag: string, opts: { platforms?: string[]; format?: Format } = {}): PushedIndex => {
    const types = MEDIA_TYPES[opts.format ?? 'oci'];
    const children = (opts.platforms ?? ['linux/amd64', 'linux/arm64']).map((spec): PushedChild => {
      const platform = parsePlatform(spec);
      const tar = tarWithOneFile('platform.txt', Buffer.from(`${repoName}:${tag} ${spec}\n`));
      const layer = gzipSync(tar);
      const config = Buffer.from(JSON.stringify({ ...platform, config: {}, rootfs: { type: 'layers', diff_ids: [sha256(tar)] } }));
      const layers = [{ digest: addBlob(repoName, layer), size: layer.length }];
      const configDigest = addBlob(repoName, config);
      const bytes = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: types.manifest,
          config: { mediaType: types.config, digest: configDigest, size: config.length },
          layers: layers.map((l) => ({ mediaType: types.layer, ...l })),
        }),
      );
      const digest = addManifest(repoName, null, bytes, types.manifest);
      return { digest, mediaType: types.manifest, size: bytes.length, bytes, platform, configDigest, layers };
    });
    const entries = children.map(({ mediaType, digest, size, platform }) => ({ mediaType, digest, size, platform }));
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: types.index, manifests: entries }));
    const digest = addManifest(repoName, tag, bytes, types.index);
    return { repo: repoName, tag, digest, mediaType: types.index, bytes, children };
  };

  const clearFaults = (): void => {
    truncations = [];
    corruptions = [];
    failures = [];
    delays = [];
    throttles = [];
  };

  return {
    url: `http://${host}`,
    host,
    addManifest,
    tag: (repoName, tag, digest) => void repo(repoName).tags.set(tag, digest),
    addBlob,
    addImage,
    truncateAt: (digest, offset, times = Infinity) => void truncations.push({ digest, offset, remaining: times }),
    corrupt: (digest, times = Infinity) => void corruptions.push({ digest, remaining: times }),
    failWith: (pattern, status, opts = {}) => {
      const o = typeof opts === 'number' ? { times: opts } : opts;
      failures.push({ pattern, status, opts: o, remaining: o.times ?? Infinity });
    },
    delay: (pattern, ms, times = Infinity) => void delays.push({ pattern, ms, remaining: times }),
    throttle: (pattern, bytesPerTick, tickMs = 10) => void throttles.push({ pattern, bytesPerTick, tickMs }),
    async down(newMode = 'refuse') {
      if (newMode === 'refuse' && mode !== 'refuse') {
        mode = 'refuse';
        const closed = closeListener();
        dropConnections();
        await closed;
      } else if (newMode === 'reset') {
        if (mode === 'refuse') await listen(port);
        mode = 'reset';
        dropConnections();
      }
    },
    async up() {
      if (mode === 'refuse') await listen(port);
      mode = 'up';
    },
    requests,
    count: (method, substring) => requests.filter((r) => (method === '*' || r.method === method) && r.url.includes(substring)).length,
    clearFaults,
    reset() {
      requests.length = 0;
      clearFaults();
    },
    async stop() {
      if (mode === 'refuse') return;
      const closed = closeListener();
      dropConnections();
      await closed;
      mode = 'refuse';
    },
  };
}
