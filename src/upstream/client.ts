import { rootCertificates } from 'node:tls';
import { Agent, ProxyAgent, errors as undiciErrors, type Dispatcher } from 'undici';
import type { Readable } from 'node:stream';
import { MANIFEST_ACCEPT, baseMediaType } from '../oci/media-types.js';
import type { Logger } from '../log.js';
import { parseChallenge, type Challenge } from './challenge.js';
import { noteUpstreamContact } from './contact.js';
import { UpstreamError, type UpstreamFailure } from './errors.js';
import { describeProxy, upstreamTransport, type UpstreamTransport } from './transport.js';
import { basicAuthorization, TokenCache, TokenDeniedError, type Credentials } from './token-cache.js';
import { isLent, type LentBody } from './lent-body.js';
import { KeptConnections, socketGet } from './socket-get.js';
import type { ConnectionOptions } from 'node:tls';

export interface UpstreamSettings {
  /** Base URL, e.g. `https://registry-1.docker.io`. */
  url: string;
  credentials?: Credentials;
  timeouts: { connectMs: number; headersMs: number; bodyIdleMs: number };
  /** Tries for one request, counting the first, on network errors and 5xx. */
  attempts: number;
  maxManifestBytes: number;
  /** Told of every failure a request ends with (for metrics and the status page). */
  onFailure?: (failure: UpstreamFailure, error: UpstreamError) => void;
  /** Told of every answer upstream gives (after auth, redirects and retries), for its health. */
  onAnswer?: (answer: UpstreamAnswer) => void;
  /** TLS trust, client certificate and proxy; default: the system's CAs, the proxy from the environment. */
  transport?: UpstreamTransport;
}

export interface UpstreamAnswer {
  status: number;
  /** Docker Hub's `ratelimit-remaining` (e.g. `76;w=21600`), when upstream sends it. */
  rateLimitRemaining?: string;
}

export interface ManifestResponse {
  bytes?: Buffer; // absent for HEAD
  mediaType: string;
  /** `Docker-Content-Digest` as upstream sent it, if it did. */
  digest?: string;
  size: number;
}

export interface BlobResponse {
  body: Readable;
  /** Total blob size when known (from Content-Length or Content-Range). */
  size?: number;
  /** Offset of the first byte of `body` (0 unless a resume was honoured). */
  offset: number;
}

/** A blob being downloaded into the store: its body may be read straight off the socket. */
export interface DownloadResponse extends Omit<BlobResponse, 'body'> {
  body: Readable | LentBody;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
const RETRY_STATUSES = new Set([500, 502, 503, 504]);

/**
 * A client for one upstream registry: the registry token flow and basic auth, retries with
 * backoff on network errors and 5xx, and manual redirects that drop our credentials when they
 * leave the registry's host (blob downloads are commonly redirected to a CDN).
 */
export class UpstreamClient {
  readonly origin: string;
  private readonly agent: Dispatcher;
  /** For download(): TLS as the agent has it, and connections kept between blobs; unset through a proxy. */
  private readonly direct: { tls: ConnectionOptions; kept: KeptConnections } | undefined;
  private readonly tokens: TokenCache;
  /** The last challenge seen, so later requests authenticate up front instead of after a 401. */
  private challenge: Challenge | undefined;

  constructor(
    private readonly settings: UpstreamSettings,
    private readonly log: Logger,
  ) {
    this.origin = new URL(settings.url).origin;
    const transport = settings.transport ?? upstreamTransport({ url: settings.url });
    const tls = {
      // `ca` replaces Node's trust store: keep the system's CAs next to the upstream's own.
      ...(transport.ca ? { ca: [...rootCertificates, transport.ca.toString('utf8')] } : {}),
      ...(transport.cert ? { cert: transport.cert } : {}),
      ...(transport.key ? { key: transport.key } : {}),
      ...(transport.insecure ? { rejectUnauthorized: false } : {}),
    };
    const common = {
      headersTimeout: settings.timeouts.headersMs,
      bodyTimeout: settings.timeouts.bodyIdleMs,
      connections: 64,
    };
    if (transport.insecure) log.warn('upstream certificates are not verified (insecure: true)', { upstream: this.origin });
    if (transport.proxy) {
      log.info('upstream through a proxy', { upstream: this.origin, proxy: describeProxy(transport.proxy) });
      this.agent = new ProxyAgent({ uri: transport.proxy, requestTls: tls, proxyTls: { timeout: settings.timeouts.connectMs }, connect: { timeout: settings.timeouts.connectMs }, ...common });
      this.direct = undefined;
    } else {
      this.agent = new Agent({ connect: { timeout: settings.timeouts.connectMs, ...tls }, ...common });
      this.direct = { tls, kept: new KeptConnections() };
    }
    this.tokens = new TokenCache((url, authorization) => this.fetchToken(url, authorization), settings.credentials);
  }

  async manifest(repo: string, reference: string, method: 'GET' | 'HEAD'): Promise<ManifestResponse> {
    const res = await this.send(repo, method, `/v2/${repo}/manifests/${reference}`, {
      accept: MANIFEST_ACCEPT,
    });
    const what = `manifest ${repo}:${reference}`;
    this.expectOk(res, what);
    const mediaType = baseMediaType(header(res, 'content-type')) || 'application/octet-stream';
    const digest = header(res, 'docker-content-digest');
    const declared = Number(header(res, 'content-length') ?? NaN);
    if (Number.isFinite(declared) && declared > this.settings.maxManifestBytes) {
      discard(res.body);
      throw new UpstreamError('too_large', `${what} is ${declared} bytes, over this mirror's ${this.settings.maxManifestBytes}-byte manifest limit; not mirrored`);
    }
    if (method === 'HEAD') {
      res.body.resume();
      return { mediaType, digest, size: Number.isFinite(declared) ? declared : -1 };
    }
    const bytes = await readLimited(res.body, this.settings.maxManifestBytes, what);
    return { bytes, mediaType, digest, size: bytes.length };
  }

  async blobHead(repo: string, digest: string): Promise<{ size?: number }> {
    const res = await this.send(repo, 'HEAD', `/v2/${repo}/blobs/${digest}`, {});
    this.expectOk(res, `blob ${digest} in ${repo}`);
    res.body.resume();
    const size = Number(header(res, 'content-length') ?? NaN);
    return { size: Number.isFinite(size) ? size : undefined };
  }

  /** Starts a blob download, from `offset` when resuming (upstream may ignore the range and send it all). */
  async blob(repo: string, digest: string, offset = 0): Promise<BlobResponse> {
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const res = await this.send(repo, 'GET', `/v2/${repo}/blobs/${digest}`, headers);
    if (res.statusCode === 206) {
      const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(header(res, 'content-range') ?? '');
      if (!m) {
        discard(res.body);
        throw new UpstreamError('bad_response', `blob ${digest}: 206 without a usable Content-Range`);
      }
      return { body: res.body, offset: Number(m[1]), size: m[2] === '*' ? undefined : Number(m[2]) };
    }
    this.expectOk(res, `blob ${digest} in ${repo}`);
    const size = Number(header(res, 'content-length') ?? NaN);
    return { body: res.body, offset: 0, size: Number.isFinite(size) ? size : undefined };
  }

  /**
   * A blob for the store. Connected to upstream directly, its body is read straight off the
   * socket (socket-get.ts: a fraction of undici's CPU per byte), following redirects as blob()
   * does. Through a proxy, or when upstream answers anything but the body (a challenge, an error,
   * a chunked or encoded body) or cannot be reached, the request goes the usual way: blob(), with
   * its token flow, retries and errors.
   */
  async download(repo: string, digest: string, offset = 0): Promise<DownloadResponse> {
    const direct = this.direct && (await this.downloadOffSocket(this.direct, repo, digest, offset).catch(() => undefined));
    return direct || this.blob(repo, digest, offset);
  }

  private async downloadOffSocket(
    direct: NonNullable<UpstreamClient['direct']>,
    repo: string,
    digest: string,
    offset: number,
  ): Promise<DownloadResponse | undefined> {
    const headers: Record<string, string> = { 'user-agent': 'sparse-mirror', ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) };
    const authorization = await this.authorization(`repository:${repo}:pull`);
    if (authorization) headers.authorization = authorization;
    const { connectMs, headersMs, bodyIdleMs } = this.settings.timeouts;
    let url = new URL(`/v2/${repo}/blobs/${digest}`, this.origin);
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      noteUpstreamContact();
      const res = await socketGet(url, { headers, tls: direct.tls, connectMs, headersMs, bodyIdleMs }, direct.kept);
      if (res.kind === 'body') {
        this.settings.onAnswer?.({ status: res.status, rateLimitRemaining: res.headers['ratelimit-remaining'] });
        if (res.status === 200) return { body: res.body, offset: 0, size: res.length };
        const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(res.headers['content-range'] ?? '');
        if (!m) {
          res.body.destroy();
          return undefined;
        }
        return { body: res.body, offset: Number(m[1]), size: m[2] === '*' ? undefined : Number(m[2]) };
      }
      const next = REDIRECTS.has(res.status) ? this.redirectTarget(res.headers.location, url, headers) : undefined;
      if (!next) return undefined;
      url = next;
    }
    return undefined;
  }

  /** Tag list, passed through (with `n`/`last`), returning the body and any `Link` for the next page. */
  async tags(repo: string, query: string): Promise<{ body: Buffer; link?: string }> {
    const res = await this.send(repo, 'GET', `/v2/${repo}/tags/list${query ? `?${query}` : ''}`, {});
    this.expectOk(res, `tag list of ${repo}`);
    return { body: await readLimited(res.body, this.settings.maxManifestBytes, `tag list of ${repo}`), link: header(res, 'link') };
  }

  /**
   * The OCI 1.1 referrers list of `digest`: the index's bytes, or undefined when upstream has no
   * referrers API (404: distribution 2.8 and 3.x, Docker Hub, ghcr.io), where the tag schema applies.
   */
  async referrers(repo: string, digest: string): Promise<Buffer | undefined> {
    const what = `referrers of ${repo}@${digest}`;
    const res = await this.send(repo, 'GET', `/v2/${repo}/referrers/${digest}`, { accept: 'application/vnd.oci.image.index.v1+json' });
    if (res.statusCode === 404) {
      res.body.resume();
      return undefined;
    }
    this.expectOk(res, what);
    const declared = Number(header(res, 'content-length') ?? NaN);
    if (Number.isFinite(declared) && declared > this.settings.maxManifestBytes) {
      discard(res.body);
      throw new UpstreamError('too_large', `${what} is ${declared} bytes, over this mirror's ${this.settings.maxManifestBytes}-byte manifest limit`);
    }
    return readLimited(res.body, this.settings.maxManifestBytes, what);
  }

  async close(): Promise<void> {
    this.direct?.kept.close();
    await this.agent.close();
  }

  private expectOk(res: Dispatcher.ResponseData, what: string): void {
    const status = res.statusCode;
    if (status === 200) return;
    res.body.resume();
    throw this.failed(statusError(status, `${what} at ${this.origin}`, header(res, 'retry-after')));
  }

  private failed(e: UpstreamError): UpstreamError {
    this.settings.onFailure?.(e.failure, e);
    return e;
  }

  /** One request with auth, redirects and retries; the caller consumes or discards the body. */
  private async send(
    repo: string,
    method: 'GET' | 'HEAD',
    path: string,
    extraHeaders: Record<string, string>,
  ): Promise<Dispatcher.ResponseData> {
    const scope = `repository:${repo}:pull`;
    let lastError: unknown;
    for (let attempt = 1; attempt <= this.settings.attempts; attempt++) {
      try {
        let res = await this.authorizedRequest(method, path, extraHeaders, scope);
        if (res.statusCode === 401) {
          const challenge = parseChallenge(header(res, 'www-authenticate'));
          res.body.resume();
          if (challenge) {
            this.challenge = challenge;
            this.tokens.invalidate(scope);
            res = await this.authorizedRequest(method, path, extraHeaders, scope);
          }
        }
        if (RETRY_STATUSES.has(res.statusCode) && attempt < this.settings.attempts) {
          res.body.resume();
          lastError = new UpstreamError('unavailable', `upstream error ${res.statusCode}`, res.statusCode);
        } else {
          this.settings.onAnswer?.({ status: res.statusCode, rateLimitRemaining: header(res, 'ratelimit-remaining') });
          return res;
        }
      } catch (e) {
        if (e instanceof TokenDeniedError) throw this.failed(new UpstreamError('denied', `${this.origin}: ${e.message}; check the mirror's credentials`));
        if (e instanceof UpstreamError) throw e;
        lastError = e;
        if (attempt === this.settings.attempts) break;
      }
      await sleep(backoffMs(attempt));
    }
    if (lastError instanceof UpstreamError) throw this.failed(lastError);
    throw this.failed(new UpstreamError('unavailable', `${this.origin} is unreachable: ${describeNetworkError(lastError)}`));
  }

  private async authorizedRequest(
    method: 'GET' | 'HEAD',
    path: string,
    extraHeaders: Record<string, string>,
    scope: string,
  ): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { 'user-agent': 'sparse-mirror', ...extraHeaders };
    const authorization = await this.authorization(scope);
    if (authorization) headers.authorization = authorization;
    let url = new URL(path, this.origin);
    for (let hop = 0; ; hop++) {
      noteUpstreamContact();
      const res = await this.agent.request({ origin: url.origin, path: url.pathname + url.search, method, headers });
      if (!REDIRECTS.has(res.statusCode) || hop >= MAX_REDIRECTS) return res;
      res.body.resume();
      const next = this.redirectTarget(header(res, 'location'), url, headers);
      if (!next) return res;
      url = next;
    }
  }

  /**
   * Where a redirect from `from` leads (undefined without a Location): http(s) only, and
   * `headers` lose the registry's credentials once it leaves the registry's origin.
   */
  private redirectTarget(location: string | undefined, from: URL, headers: Record<string, string>): URL | undefined {
    if (!location) return undefined;
    const next = new URL(location, from);
    if (next.protocol !== 'https:' && next.protocol !== 'http:') {
      throw new UpstreamError('bad_response', `upstream redirected to a non-http URL`);
    }
    // Our credentials are for the registry only, never for wherever it redirects.
    if (next.origin !== this.origin) delete headers.authorization;
    return next;
  }

  private async authorization(scope: string): Promise<string | undefined> {
    const c = this.challenge;
    if (c?.scheme === 'bearer') return `Bearer ${await this.tokens.get(c, scope)}`;
    if (c?.scheme === 'basic' && this.settings.credentials) return basicAuthorization(this.settings.credentials);
    return undefined;
  }

  private async fetchToken(url: URL, authorization: string | undefined): Promise<{ status: number; body: unknown }> {
    const headers: Record<string, string> = { 'user-agent': 'sparse-mirror' };
    if (authorization) headers.authorization = authorization;
    noteUpstreamContact();
    const res = await this.agent.request({ origin: url.origin, path: url.pathname + url.search, method: 'GET', headers });
    const text = (await readLimited(res.body, 1024 * 1024, 'token response')).toString('utf8');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (res.statusCode !== 200) this.log.warn('upstream token request refused', { upstream: this.origin, status: res.statusCode });
    return { status: res.statusCode, body };
  }
}

function statusError(status: number, where: string, retryAfter: string | undefined): UpstreamError {
  if (status === 404) return new UpstreamError('not_found', `${where}: not found upstream`, status);
  if (status === 401 || status === 403) {
    return new UpstreamError('denied', `${where}: upstream refused access (${status}); check the mirror's credentials for it`, status);
  }
  if (status === 429) return new UpstreamError('rate_limited', `${where}: upstream rate limit reached`, status, retryAfter);
  if (status >= 500) return new UpstreamError('unavailable', `${where}: upstream error ${status}`, status);
  return new UpstreamError('bad_response', `${where}: unexpected upstream status ${status}`, status);
}

function header(res: Dispatcher.ResponseData, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

async function readLimited(body: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body) {
      total += (chunk as Buffer).length;
      if (total > limit) {
        discard(body);
        throw new UpstreamError('too_large', `${what} is larger than this mirror's ${limit}-byte limit; not mirrored`);
      }
      chunks.push(chunk as Buffer);
    }
  } catch (e) {
    if (e instanceof UpstreamError) throw e;
    throw new UpstreamError('unavailable', `${what}: connection lost while reading (${describeNetworkError(e)})`);
  }
  return Buffer.concat(chunks);
}

/**
 * Drops a response body we will not read. undici reports the abort as an 'error' event, which
 * would crash the process with no listener attached.
 */
export function discard(body: Readable | LentBody): void {
  if (isLent(body)) return body.destroy();
  body.on('error', () => {});
  body.destroy();
}

function backoffMs(attempt: number): number {
  return Math.min(2000, 100 * 2 ** (attempt - 1)) * (0.75 + Math.random() / 2);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function describeNetworkError(e: unknown): string {
  if (e instanceof undiciErrors.UndiciError) return `${e.code}: ${e.message}`;
  const err = e as NodeJS.ErrnoException | undefined;
  const cause = (err as { cause?: NodeJS.ErrnoException } | undefined)?.cause;
  return cause?.code ?? err?.code ?? err?.message ?? String(e);
}
