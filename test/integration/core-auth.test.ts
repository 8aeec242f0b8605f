// Upstream authentication against real distribution 2.8 registries: htpasswd (Basic) and the
// registry token flow with an in-process token server. Pulls work with the configured
// credentials, fail clearly without them, tokens are cached per scope, and no credential or
// upstream challenge ever reaches a client or the mirror's log.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useFixture } from '../support/fixture.js';
import { MANIFEST_ACCEPT, pushMultiPlatformImage, sha256, type PushedChild, type PushedIndex } from '../support/images.js';
import type { BasicAuth } from '../support/registry.js';
import { skopeoCopyToDir } from '../support/skopeo.js';
import { startTokenServer, type TokenServerHandle } from '../support/token-server.js';
import type { TestMirror } from '../support/mirror.js';

const basicUser: BasicAuth = { username: 'alice', password: 'basic-Secret-7f3a9c' };
const tokenUser: BasicAuth = { username: 'bob', password: 'token-Secret-2d8e41' };

/** Every response a client saw, so the secrecy test can look through all of them. */
const seen: Array<{ url: string; headers: string; body: string }> = [];

interface Answer {
  status: number;
  headers: Headers;
  bytes: Buffer;
}

async function request(url: string, method: 'GET' | 'HEAD' = 'GET'): Promise<Answer> {
  const res = await fetch(url, { method, headers: { accept: MANIFEST_ACCEPT } });
  const bytes = Buffer.from(await res.arrayBuffer());
  seen.push({ url, headers: JSON.stringify([...res.headers]), body: bytes.toString('utf8') });
  return { status: res.status, headers: res.headers, bytes };
}

const arm64Of = (i: PushedIndex): PushedChild => i.children.find((c) => c.platform?.architecture === 'arm64' && !c.attestationFor)!;
const amd64Of = (i: PushedIndex): PushedChild => i.children.find((c) => c.platform?.architecture === 'amd64' && !c.attestationFor)!;

/** Things that must never show up outside the mirror: passwords and encoded credentials. */
function secretsOf(u: BasicAuth): string[] {
  return [u.password, Buffer.from(`${u.username}:${u.password}`).toString('base64'), `${u.username}:${u.password}`];
}

describe('upstream authentication', () => {
  // The token registry needs the token server's address, so it starts first (and stops last).
  let tokenServer: TokenServerHandle;
  beforeAll(async () => {
    tokenServer = await startTokenServer({ users: { [tokenUser.username]: tokenUser.password }, anonymousPull: false });
  });
  afterAll(async () => {
    await tokenServer?.stop();
  });

  const fx = useFixture({
    registries: () => ({ basic: { auth: { basic: [basicUser] } }, token: { auth: { token: tokenServer } } }),
    images: async ({ registries }) => {
      const opts = { platforms: ['linux/amd64', 'linux/arm64/v8', 'linux/s390x'], layersPerImage: 2 };
      const [basicImage, tokenImage] = await Promise.all([
        pushMultiPlatformImage(registries.basic.url, 'library/app', '1.0', { ...opts, auth: basicUser }),
        pushMultiPlatformImage(registries.token.url, 'library/app', '1.0', { ...opts, auth: tokenUser }),
      ]);
      // The upstreams really refuse anonymous pulls.
      expect((await fetch(`${registries.basic.url}/v2/library/app/manifests/1.0`)).status).toBe(401);
      expect((await fetch(`${registries.token.url}/v2/library/app/manifests/1.0`)).status).toBe(401);
      return { basicImage, tokenImage };
    },
  });
  const tempDir = () => fx.tempDir('core-auth-');
  const skopeoOutput: string[] = [];

  async function mirrorFor(url: string, creds?: BasicAuth): Promise<TestMirror> {
    return fx.startMirror({ upstreams: [{ url, ...(creds ? { username: creds.username, password: creds.password } : {}) }], upstream: { attempts: 1 } });
  }

  async function pull(m: TestMirror, index: PushedIndex, arch: 'amd64' | 'arm64'): Promise<void> {
    const dest = await tempDir();
    const r = await skopeoCopyToDir(`docker://${m.host}/${index.repo}:${index.tag}`, dest, { os: 'linux', arch });
    skopeoOutput.push(r.stdout, r.stderr);
    expect(r.code, r.stderr).toBe(0);
    const child = arch === 'arm64' ? arm64Of(index) : amd64Of(index);
    expect((await readFile(join(dest, 'manifest.json'))).equals(child.bytes)).toBe(true);
    for (const l of child.layers) expect(sha256(await readFile(join(dest, l.digest.slice(7))))).toBe(l.digest);
  }

  /** The client gets a 401/403 OCI error of its own, never upstream's challenge. */
  function expectRefused(r: Answer, what: string): void {
    expect([401, 403], `${what}: ${r.status} ${r.bytes.toString()}`).toContain(r.status);
    const body = JSON.parse(r.bytes.toString()) as { errors: Array<{ code: string; message: string }> };
    expect(['UNAUTHORIZED', 'DENIED']).toContain(body.errors[0]!.code);
    expect(body.errors[0]!.message).toMatch(/credentials/);
    expect(body.errors[0]!.message.length).toBeGreaterThan(0);
    const challenge = r.headers.get('www-authenticate');
    if (challenge !== null) {
      expect(challenge).not.toContain('sparse-mirror-test');
      expect(challenge).not.toContain(tokenServer.url);
    }
  }

  describe('basic auth upstream', () => {
    it('pulls through with the configured username and password', async () => {
      const m = await mirrorFor(fx.registries.basic.url, basicUser);
      await pull(m, fx.images.basicImage, 'arm64');
      const index = await request(`${m.url}/v2/library/app/manifests/1.0`);
      expect(index.status).toBe(200);
      expect(index.bytes.equals(fx.images.basicImage.bytes)).toBe(true);
    });

    it('without credentials the client gets a clear 401/403 OCI error, not the upstream challenge', async () => {
      const m = await mirrorFor(fx.registries.basic.url);
      for (const method of ['GET', 'HEAD'] as const) {
        const r = await request(`${m.url}/v2/library/app/manifests/1.0`, method);
        if (method === 'GET') expectRefused(r, 'manifest');
        else expect([401, 403]).toContain(r.status);
        expect(r.headers.get('www-authenticate') ?? '').not.toMatch(/basic/i);
      }
      const dest = await tempDir();
      const copy = await skopeoCopyToDir(`docker://${m.host}/library/app:1.0`, dest, { os: 'linux', arch: 'amd64' });
      skopeoOutput.push(copy.stdout, copy.stderr);
      expect(copy.code).not.toBe(0);
    });

    it('with a wrong password the client gets the same kind of error', async () => {
      const m = await mirrorFor(fx.registries.basic.url, { username: basicUser.username, password: 'wrong-Password-99' });
      expectRefused(await request(`${m.url}/v2/library/app/manifests/1.0`), 'wrong password');
      expect(m.logs.join('')).not.toContain('wrong-Password-99');
    });
  });

  describe('token auth upstream', () => {
    it('pulls through with credentials, asks for scoped tokens with them, and reuses the cached token', async () => {
      const m = await mirrorFor(fx.registries.token.url, tokenUser);
      tokenServer.requests.length = 0;
      await pull(m, fx.images.tokenImage, 'arm64');
      const first = [...tokenServer.requests];
      expect(first.length).toBeGreaterThanOrEqual(1);
      for (const t of first) {
        expect(t.scopes).toEqual(['repository:library/app:pull']);
        expect(t.service).toBe(tokenServer.service);
        expect(t.withCredentials).toBe(true);
        expect(t.user).toBe(tokenUser.username);
        expect(t.status).toBe(200);
      }
      // Concurrent requests for one scope share one token request.
      expect(first).toHaveLength(1);

      // A second pull (another platform, so the mirror has to go upstream again) reuses the token.
      await pull(m, fx.images.tokenImage, 'amd64');
      expect(tokenServer.requests).toHaveLength(first.length);
    });

    it('without credentials the client gets a clear 401/403 OCI error, not the upstream challenge', async () => {
      const m = await mirrorFor(fx.registries.token.url);
      const r = await request(`${m.url}/v2/library/app/manifests/1.0`);
      expectRefused(r, 'token registry, anonymous');
      expect(r.headers.get('www-authenticate') ?? '').not.toMatch(/bearer/i);
      const dest = await tempDir();
      const copy = await skopeoCopyToDir(`docker://${m.host}/library/app:1.0`, dest, { os: 'linux', arch: 'amd64' });
      skopeoOutput.push(copy.stdout, copy.stderr);
      expect(copy.code).not.toBe(0);
    });
  });

  it('never shows credentials in any response, in skopeo output or in the mirror logs', () => {
    expect(seen.length).toBeGreaterThan(0);
    expect(fx.mirrors.length).toBeGreaterThanOrEqual(5);
    const responses = seen.map((s) => `${s.headers}\n${s.body}`).join('\n');
    const logs = fx.mirrors.flatMap((m) => m.logs).join('');
    expect(logs.length).toBeGreaterThan(0);
    const output = skopeoOutput.join('\n');
    for (const secret of [...secretsOf(basicUser), ...secretsOf(tokenUser)]) {
      expect(responses).not.toContain(secret);
      expect(logs).not.toContain(secret);
      expect(output).not.toContain(secret);
    }
    for (const text of [responses, logs]) {
      expect(text).not.toMatch(/Basic [A-Za-z0-9+/=]{8,}/);
      expect(text).not.toMatch(/Bearer [A-Za-z0-9._-]{20,}/);
      expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/); // a JWT
    }
  });
});
