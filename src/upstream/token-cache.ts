import type { Challenge } from './challenge.js';

export interface Credentials {
  username: string;
  password: string;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** Tokens are renewed this long before they expire, so one never lapses mid-request. */
const EXPIRY_MARGIN_MS = 10_000;
/** The token spec's default lifetime when a server sends no `expires_in`. */
const DEFAULT_EXPIRES_IN_S = 60;

export type FetchToken = (url: URL, authorization: string | undefined) => Promise<{ status: number; body: unknown }>;

/** Bearer tokens for one upstream, cached per scope until shortly before they expire. */
export class TokenCache {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();

  constructor(
    private readonly fetchToken: FetchToken,
    private readonly credentials: Credentials | undefined,
  ) {}

  cached(scope: string): string | undefined {
    const t = this.tokens.get(scope);
    return t && t.expiresAt > Date.now() ? t.token : undefined;
  }

  invalidate(scope: string): void {
    this.tokens.delete(scope);
  }

  /** One token request per scope at a time, however many requests need it. */
  get(challenge: Challenge, scope: string): Promise<string> {
    const hit = this.cached(scope);
    if (hit) return Promise.resolve(hit);
    let p = this.pending.get(scope);
    if (!p) {
      p = this.request(challenge, scope).finally(() => this.pending.delete(scope));
      this.pending.set(scope, p);
    }
    return p;
  }

  private async request(challenge: Challenge, scope: string): Promise<string> {
    const realm = challenge.params.realm;
    if (!realm) throw new Error('upstream bearer challenge has no realm');
    const url = new URL(realm);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`token realm ${realm} is not http(s)`);
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    if (scope) url.searchParams.set('scope', scope);
    const auth = this.credentials ? basicAuthorization(this.credentials) : undefined;
    const { status, body } = await this.fetchToken(url, auth);
    // A failing token server is an outage (retried, stale content served), not bad credentials.
    if (status >= 500) throw new Error(`token server answered ${status} for scope ${scope}`);
    if (status !== 200) throw new TokenDeniedError(`token server answered ${status} for scope ${scope}`);
    const b = (body ?? {}) as { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    const token = typeof b.token === 'string' ? b.token : typeof b.access_token === 'string' ? b.access_token : undefined;
    if (!token) throw new Error('token server response has no token');
    const expiresIn = typeof b.expires_in === 'number' && b.expires_in > 0 ? b.expires_in : DEFAULT_EXPIRES_IN_S;
    const issued = typeof b.issued_at === 'string' ? Date.parse(b.issued_at) : NaN;
    const start = Number.isFinite(issued) && issued <= Date.now() ? issued : Date.now();
    const lifetime = expiresIn * 1000;
    this.tokens.set(scope, { token, expiresAt: start + Math.max(lifetime - EXPIRY_MARGIN_MS, lifetime / 2) });
    return token;
  }
}

export class TokenDeniedError extends Error {}

export function basicAuthorization(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}
