import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseChallenge, type Challenge } from '../../src/upstream/challenge.js';
import { basicAuthorization, TokenCache, TokenDeniedError, type FetchToken } from '../../src/upstream/token-cache.js';

describe('parseChallenge', () => {
  it("parses Docker Hub's Bearer challenge", () => {
    const header =
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"';
    expect(parseChallenge(header)).toEqual({
      scheme: 'bearer',
      params: {
        realm: 'https://auth.docker.io/token',
        service: 'registry.docker.io',
        scope: 'repository:library/alpine:pull',
      },
    });
  });

  it('keeps commas inside quoted values', () => {
    const c = parseChallenge('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:org/app:pull,push"');
    expect(c?.params.scope).toBe('repository:org/app:pull,push');
    expect(c?.params.service).toBe('ghcr.io');
  });

  it('unescapes quoted-pair characters', () => {
    const c = parseChallenge('Bearer realm="https://x/token",error="a \\"quoted\\" word",other="back\\\\slash"');
    expect(c?.params.error).toBe('a "quoted" word');
    expect(c?.params.other).toBe('back\\slash');
    expect(c?.params.realm).toBe('https://x/token');
  });

  it('parses a Basic challenge', () => {
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({ scheme: 'basic', params: { realm: 'Registry Realm' } });
    expect(parseChallenge('Basic realm="x", charset="UTF-8"')).toEqual({ scheme: 'basic', params: { realm: 'x', charset: 'UTF-8' } });
  });

  it('is case-insensitive about the scheme and parameter names', () => {
    expect(parseChallenge('BEARER Realm="https://x/t",SERVICE="s"')).toEqual({ scheme: 'bearer', params: { realm: 'https://x/t', service: 's' } });
    expect(parseChallenge('basic realm="r"')?.scheme).toBe('basic');
  });

  it('accepts unquoted token values and white space around "=" and ","', () => {
    expect(parseChallenge('Bearer realm=https://auth.example/token , service = reg.example ,scope=repository:a:pull')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.example/token', service: 'reg.example', scope: 'repository:a:pull' },
    });
  });

  it('keeps the error parameters a registry sends after a failed token', () => {
    const c = parseChallenge('Bearer realm="https://x/token",service="x",scope="repository:a:pull",error="insufficient_scope"');
    expect(c?.params.error).toBe('insufficient_scope');
    expect(c?.params.scope).toBe('repository:a:pull');
  });

  it('takes the first Bearer or Basic challenge of several', () => {
    expect(parseChallenge('Basic realm="basic-realm", Bearer realm="https://x/token",service="s"')).toEqual({
      scheme: 'basic',
      params: { realm: 'basic-realm' },
    });
    expect(parseChallenge('Bearer realm="https://x/token",service="s", Basic realm="b"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://x/token', service: 's' },
    });
  });

  it('skips challenges of other schemes', () => {
    expect(parseChallenge('Digest realm="d", nonce="abc,def", Bearer realm="https://x/token",service="s"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://x/token', service: 's' },
    });
    expect(parseChallenge('Negotiate, Basic realm="b"')).toEqual({ scheme: 'basic', params: { realm: 'b' } });
  });

  it('is not fooled by a scheme name inside a quoted value of another challenge', () => {
    const c = parseChallenge('Digest realm="Bearer realm=evil", Basic realm="good"');
    expect(c).toEqual({ scheme: 'basic', params: { realm: 'good' } });
  });

  it.each([undefined, null, '', 'garbage', '!!!', '=,=,', 'Negotiate', 'Negotiate abc', 'Digest realm="x"'])(
    'garbage or unsupported schemes: %j → undefined',
    (header) => {
      expect(parseChallenge(header)).toBeUndefined();
    },
  );
});

// ---------------------------------------------------------------------------------------------

const CHALLENGE: Challenge = {
  scheme: 'bearer',
  params: { realm: 'https://auth.example.com/token', service: 'registry.example.com' },
};
const SCOPE_A = 'repository:library/alpine:pull';
const SCOPE_B = 'repository:library/busybox:pull';

interface Call {
  url: URL;
  authorization: string | undefined;
}

/** A fake token server: records calls; answers with `reply` (a function of the call number). */
function fakeServer(reply: (n: number, url: URL) => { status: number; body: unknown } | Promise<{ status: number; body: unknown }>) {
  const calls: Call[] = [];
  const fetchToken: FetchToken = async (url, authorization) => {
    calls.push({ url: new URL(url), authorization });
    return reply(calls.length, url);
  };
  return { calls, fetchToken };
}

describe('TokenCache', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fetches a token and caches it per scope', async () => {
    const server = fakeServer((n, url) => ({ status: 200, body: { token: `t${n}-${url.searchParams.get('scope')}`, expires_in: 300 } }));
    const cache = new TokenCache(server.fetchToken, undefined);
    expect(cache.cached(SCOPE_A)).toBeUndefined();
    const a1 = await cache.get(CHALLENGE, SCOPE_A);
    const a2 = await cache.get(CHALLENGE, SCOPE_A);
    expect(a1).toBe(`t1-${SCOPE_A}`);
    expect(a2).toBe(a1);
    expect(cache.cached(SCOPE_A)).toBe(a1);
    expect(server.calls).toHaveLength(1);
    const b = await cache.get(CHALLENGE, SCOPE_B);
    expect(b).toBe(`t2-${SCOPE_B}`);
    expect(server.calls).toHaveLength(2);
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe(a1);
    expect(server.calls).toHaveLength(2);
  });

  it('adds service and scope query parameters to the realm, keeping its own', async () => {
    const server = fakeServer(() => ({ status: 200, body: { token: 't' } }));
    const cache = new TokenCache(server.fetchToken, undefined);
    await cache.get({ scheme: 'bearer', params: { realm: 'https://auth.example.com/v2/token?client_id=abc', service: 'reg svc' } }, SCOPE_A);
    const url = server.calls[0]!.url;
    expect(url.origin).toBe('https://auth.example.com');
    expect(url.pathname).toBe('/v2/token');
    expect(url.searchParams.get('client_id')).toBe('abc');
    expect(url.searchParams.get('service')).toBe('reg svc');
    expect(url.searchParams.get('scope')).toBe(SCOPE_A);
  });

  it('omits service when the challenge has none', async () => {
    const server = fakeServer(() => ({ status: 200, body: { token: 't' } }));
    await new TokenCache(server.fetchToken, undefined).get({ scheme: 'bearer', params: { realm: 'http://127.0.0.1:9/token' } }, SCOPE_A);
    expect(server.calls[0]!.url.searchParams.has('service')).toBe(false);
    expect(server.calls[0]!.url.searchParams.get('scope')).toBe(SCOPE_A);
  });

  it('sends no Authorization without credentials', async () => {
    const server = fakeServer(() => ({ status: 200, body: { token: 't' } }));
    await new TokenCache(server.fetchToken, undefined).get(CHALLENGE, SCOPE_A);
    expect(server.calls[0]!.authorization).toBeUndefined();
  });

  it('sends Basic credentials when configured', async () => {
    const server = fakeServer(() => ({ status: 200, body: { token: 't' } }));
    await new TokenCache(server.fetchToken, { username: 'alice', password: 'p:ss wörd' }).get(CHALLENGE, SCOPE_A);
    const auth = server.calls[0]!.authorization;
    expect(auth).toMatch(/^Basic /);
    expect(Buffer.from(auth!.slice('Basic '.length), 'base64').toString('utf8')).toBe('alice:p:ss wörd');
    expect(auth).toBe(basicAuthorization({ username: 'alice', password: 'p:ss wörd' }));
  });

  it('accepts access_token (OAuth-style responses)', async () => {
    const server = fakeServer(() => ({ status: 200, body: { access_token: 'oauth-token', expires_in: 300 } }));
    expect(await new TokenCache(server.fetchToken, undefined).get(CHALLENGE, SCOPE_A)).toBe('oauth-token');
  });

  it('concurrent get() calls for one scope make one request', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const server = fakeServer(async (n) => {
      await gate;
      return { status: 200, body: { token: `t${n}` } };
    });
    const cache = new TokenCache(server.fetchToken, undefined);
    const all = Promise.all(Array.from({ length: 10 }, () => cache.get(CHALLENGE, SCOPE_A)));
    const other = cache.get(CHALLENGE, SCOPE_B);
    await Promise.resolve();
    release();
    expect(await all).toEqual(Array(10).fill('t1'));
    expect(await other).toBe('t2');
    expect(server.calls).toHaveLength(2);
  });

  it('a non-200 answer is a TokenDeniedError naming status and scope, and is not cached', async () => {
    const server = fakeServer((n) => (n === 1 ? { status: 401, body: { details: 'incorrect username or password' } } : { status: 200, body: { token: 'ok' } }));
    const cache = new TokenCache(server.fetchToken, { username: 'u', password: 'wrong' });
    const err = await cache.get(CHALLENGE, SCOPE_A).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenDeniedError);
    expect((err as Error).message).toContain('401');
    expect((err as Error).message).toContain(SCOPE_A);
    expect(cache.cached(SCOPE_A)).toBeUndefined();
    // The failure is not remembered: the next get asks again.
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('ok');
    expect(server.calls).toHaveLength(2);
  });

  it.each([403, 302])('status %i is refused too', async (status) => {
    const server = fakeServer(() => ({ status, body: { token: 'should-not-be-used' } }));
    await expect(new TokenCache(server.fetchToken, undefined).get(CHALLENGE, SCOPE_A)).rejects.toBeInstanceOf(TokenDeniedError);
  });

  it.each([500, 503])('status %i is an outage, not a refusal (so stale content can be served)', async (status) => {
    const server = fakeServer(() => ({ status, body: {} }));
    const err = await new TokenCache(server.fetchToken, undefined).get(CHALLENGE, SCOPE_A).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(TokenDeniedError);
    expect((err as Error).message).toContain(String(status));
  });

  it('a 200 without a token is an error', async () => {
    for (const body of [{}, undefined, null, { token: '' }, { token: 42 }, 'token']) {
      const server = fakeServer(() => ({ status: 200, body }));
      await expect(new TokenCache(server.fetchToken, undefined).get(CHALLENGE, SCOPE_A)).rejects.toThrow(/no token/);
    }
  });

  it('a challenge without realm, or with a non-http realm, fails without a request', async () => {
    const server = fakeServer(() => ({ status: 200, body: { token: 't' } }));
    const cache = new TokenCache(server.fetchToken, undefined);
    await expect(cache.get({ scheme: 'bearer', params: {} }, SCOPE_A)).rejects.toThrow(/realm/);
    await expect(cache.get({ scheme: 'bearer', params: { realm: 'file:///etc/passwd' } }, SCOPE_A)).rejects.toThrow(/not http/);
    await expect(cache.get({ scheme: 'bearer', params: { realm: 'not a url' } }, SCOPE_A)).rejects.toThrow();
    expect(server.calls).toHaveLength(0);
  });

  it('honours expires_in: reused within it, renewed before it runs out', async () => {
    vi.useFakeTimers({ now: new Date('2025-01-01T00:00:00Z') });
    const server = fakeServer((n) => ({ status: 200, body: { token: `t${n}`, expires_in: 300 } }));
    const cache = new TokenCache(server.fetchToken, undefined);
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('t1');
    vi.advanceTimersByTime(200_000);
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('t1');
    // One second before the server's expiry the cached token is too close to lapse mid-request.
    vi.advanceTimersByTime(99_000);
    expect(cache.cached(SCOPE_A)).toBeUndefined();
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('t2');
    expect(server.calls).toHaveLength(2);
  });

  it('uses the 60 s default lifetime when expires_in is missing or invalid', async () => {
    for (const expires_in of [undefined, 0, -5, '300']) {
      vi.useFakeTimers({ now: new Date('2025-01-01T00:00:00Z') });
      const server = fakeServer((n) => ({ status: 200, body: { token: `t${n}`, expires_in } }));
      const cache = new TokenCache(server.fetchToken, undefined);
      await cache.get(CHALLENGE, SCOPE_A);
      vi.advanceTimersByTime(30_000);
      expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('t1');
      vi.advanceTimersByTime(31_000); // 61 s: past the default lifetime
      expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('t2');
      vi.useRealTimers();
    }
  });

  it('a very short expires_in is cached briefly but never past its end', async () => {
    vi.useFakeTimers({ now: new Date('2025-01-01T00:00:00Z') });
    const server = fakeServer((n) => ({ status: 200, body: { token: `t${n}`, expires_in: 2 } }));
    const cache = new TokenCache(server.fetchToken, undefined);
    await cache.get(CHALLENGE, SCOPE_A);
    expect(cache.cached(SCOPE_A)).toBe('t1');
    vi.advanceTimersByTime(2_000);
    expect(cache.cached(SCOPE_A)).toBeUndefined();
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('t2');
  });

  it('counts the lifetime from issued_at when the server sends it', async () => {
    const now = new Date('2025-01-01T00:01:00Z');
    vi.useFakeTimers({ now });
    const issued = new Date(now.getTime() - 40_000).toISOString(); // issued 40 s ago
    const server = fakeServer((n) => ({ status: 200, body: { token: `t${n}`, expires_in: 60, issued_at: issued } }));
    const cache = new TokenCache(server.fetchToken, undefined);
    await cache.get(CHALLENGE, SCOPE_A);
    vi.advanceTimersByTime(25_000); // 65 s after issue: expired by the server's clock
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('t2');
  });

  it('ignores an issued_at in the future (clock skew) and counts from now', async () => {
    const now = new Date('2025-01-01T00:00:00Z');
    vi.useFakeTimers({ now });
    const issued = new Date(now.getTime() + 3_600_000).toISOString();
    const server = fakeServer((n) => ({ status: 200, body: { token: `t${n}`, expires_in: 60, issued_at: issued } }));
    const cache = new TokenCache(server.fetchToken, undefined);
    await cache.get(CHALLENGE, SCOPE_A);
    vi.advanceTimersByTime(30_000);
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('t1');
    vi.advanceTimersByTime(31_000);
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('t2');
  });

  it('invalidate(scope) forces a new token for that scope only', async () => {
    const server = fakeServer((n) => ({ status: 200, body: { token: `t${n}`, expires_in: 300 } }));
    const cache = new TokenCache(server.fetchToken, undefined);
    await cache.get(CHALLENGE, SCOPE_A);
    await cache.get(CHALLENGE, SCOPE_B);
    cache.invalidate(SCOPE_A);
    expect(cache.cached(SCOPE_A)).toBeUndefined();
    expect(cache.cached(SCOPE_B)).toBe('t2');
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('t3');
  });

  it('a failed request does not leave the scope stuck pending', async () => {
    const server = fakeServer((n) => {
      if (n === 1) throw new Error('connection reset');
      return { status: 200, body: { token: 'second' } };
    });
    const cache = new TokenCache(server.fetchToken, undefined);
    await expect(cache.get(CHALLENGE, SCOPE_A)).rejects.toThrow('connection reset');
    expect(await cache.get(CHALLENGE, SCOPE_A)).toBe('second');
  });
});
