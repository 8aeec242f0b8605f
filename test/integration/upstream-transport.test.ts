// How the mirror reaches private upstreams: a docker-registry serving TLS with a certificate from
// the test's own CA (trusted by `ca`, or `insecure: true`), and egress through a real forward
// proxy (tinyproxy) with credentials that never show in logs or errors. Driven through the
// upstream client with the transport the config gives it.
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { UpstreamClient } from '../../src/upstream/client.js';
import { upstreamTransport, type TransportConfig } from '../../src/upstream/transport.js';
import { useFixture } from '../support/fixture.js';
import { pushMultiPlatformImage, type PushedIndex } from '../support/images.js';
import { startTestMirror } from '../support/mirror.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startTinyproxy, type Tinyproxy } from '../support/tinyproxy.js';
import { makeCa, type TestCa } from '../support/tls.js';

const PROXY_USER = 'mirror';
const PROXY_PASSWORD = `pw-${Math.random().toString(36).slice(2)}-secret`;

let ca: TestCa;
let tlsRegistry: RegistryHandle;
let proxy: Tinyproxy;
let image: PushedIndex;

const fx = useFixture({
  registry: true,
  images: async ({ registry, defer }) => {
    image = await pushMultiPlatformImage(registry.url, 'team/app', '1.0', { platforms: ['linux/amd64', 'linux/arm64'] });
    ca = await makeCa();
    const cert = await ca.issue('registry', 'server');
    // The same storage served over TLS by a second registry process.
    tlsRegistry = await startRegistry({ storageDir: registry.dir, tls: { certificate: cert.cert, key: cert.key } });
    defer(() => tlsRegistry.stop());
    proxy = await startTinyproxy({ basicAuth: { user: PROXY_USER, password: PROXY_PASSWORD } });
    defer(() => proxy.stop());
    return undefined;
  },
});

function client(u: TransportConfig) {
  const lines: string[] = [];
  const c = new UpstreamClient(
    {
      url: u.url,
      timeouts: { connectMs: 5000, headersMs: 10_000, bodyIdleMs: 10_000 },
      attempts: 1,
      maxManifestBytes: 4 * 1024 * 1024,
      transport: upstreamTransport(u, undefined, {}),
    },
    createLogger('debug', (l) => lines.push(l)),
  );
  fx.defer(() => c.close());
  return { c, lines };
}

describe('a private upstream serving TLS with an internal CA', () => {
  it('is trusted with `ca`: the index comes back byte for byte', async () => {
    expect(tlsRegistry.url).toMatch(/^https:/);
    const { c } = client({ url: tlsRegistry.url, ca: ca.cert });
    const m = await c.manifest('team/app', '1.0', 'GET');
    expect(m.digest).toBe(image.digest);
    expect(m.bytes!.equals(image.bytes)).toBe(true);
  });

  it('is refused without it, naming the certificate problem', async () => {
    const { c } = client({ url: tlsRegistry.url });
    await expect(c.manifest('team/app', '1.0', 'GET')).rejects.toThrow(/unreachable: .*(CERT|certificate|SIGNATURE)/i);
  });

  it('with `insecure: true` is used unverified, and that is logged', async () => {
    const { c, lines } = client({ url: tlsRegistry.url, insecure: true });
    expect((await c.manifest('team/app', '1.0', 'HEAD')).digest).toBe(image.digest);
    expect(lines.some((l) => l.includes('"level":"warn"') && l.includes('not verified (insecure: true)') && l.includes(tlsRegistry.host))).toBe(true);
  });

  it('a missing ca or client certificate file is an error naming it', () => {
    expect(() => upstreamTransport({ url: tlsRegistry.url, ca: '/nonexistent/ca.pem' })).toThrow(`upstream ${tlsRegistry.url}: ca: cannot read /nonexistent/ca.pem: ENOENT`);
    expect(() => upstreamTransport({ url: tlsRegistry.url, clientCert: '/nonexistent/c.pem', clientKey: '/nonexistent/k.pem' })).toThrow('clientCert: cannot read /nonexistent/c.pem');
  });
});

describe('egress through a forward proxy (tinyproxy)', () => {
  const withCreds = () => `http://${PROXY_USER}:${PROXY_PASSWORD}@127.0.0.1:${proxy.port}`;

  it('reaches a plain-HTTP upstream through the proxy, with its credentials', async () => {
    const { c, lines } = client({ url: fx.registry.url, proxy: withCreds() });
    expect((await c.manifest('team/app', '1.0', 'GET')).digest).toBe(image.digest);
    expect(await proxy.log()).toContain(fx.registry.host);
    expect(lines.join('\n')).toContain(`"proxy":"http://127.0.0.1:${proxy.port}"`);
    expect(lines.join('\n')).not.toContain(PROXY_PASSWORD);
  });

  it('tunnels to a TLS upstream trusted with `ca`', async () => {
    const before = (await proxy.log()).split('\n').filter((l) => l.includes(tlsRegistry.host)).length;
    const { c } = client({ url: tlsRegistry.url, ca: ca.cert, proxy: withCreds() });
    expect((await c.manifest('team/app', '1.0', 'GET')).digest).toBe(image.digest);
    const after = (await proxy.log()).split('\n').filter((l) => l.includes(tlsRegistry.host)).length;
    expect(after).toBeGreaterThan(before);
  });

  it('with wrong proxy credentials fails without ever showing the password', async () => {
    const wrong = `wrong-${PROXY_PASSWORD}`;
    const { c, lines } = client({ url: fx.registry.url, proxy: `http://${PROXY_USER}:${wrong}@127.0.0.1:${proxy.port}` });
    const error = await c.manifest('team/app', '1.0', 'GET').then(() => undefined, (e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error!.message).not.toContain(wrong);
    expect(lines.join('\n')).not.toContain(wrong);
  });

  it('nothing reaches the upstream once the proxy is gone', async () => {
    const dead = await startTinyproxy();
    const port = dead.port;
    await dead.stop();
    const { c } = client({ url: fx.registry.url, proxy: `http://127.0.0.1:${port}` });
    await expect(c.manifest('team/app', '1.0', 'GET')).rejects.toThrow(/unreachable/);
  });
});

describe('the mirror with these keys in its config', () => {
  it('pulls through from an upstream signed by a private CA, with that CA as the upstream\'s ca', async () => {
    const m = await startTestMirror({ upstreams: [{ url: tlsRegistry.url, ca: ca.cert }] });
    fx.defer(() => m.stop({ removeData: true }));
    const r = await fetch(`${m.url}/v2/team/app/manifests/1.0`, { headers: { accept: image.mediaType } });
    expect(r.status).toBe(200);
    expect(r.headers.get('docker-content-digest')).toBe(image.digest);
  });

  it('without the ca, the same upstream is refused as untrusted (a clear 502, no content)', async () => {
    const m = await startTestMirror({ upstreams: [{ url: tlsRegistry.url }], upstream: { attempts: 1 } });
    fx.defer(() => m.stop({ removeData: true }));
    const r = await fetch(`${m.url}/v2/team/app/manifests/1.0`, { headers: { accept: image.mediaType } });
    expect(r.status).toBe(502);
    expect(((await r.json()) as { errors: Array<{ message: string }> }).errors[0]!.message).toMatch(/certificate|unreachable/i);
  });

  it('a ca file that cannot be read stops start-up, naming it', async () => {
    await expect(startTestMirror({ upstreams: [{ url: tlsRegistry.url, ca: '/nonexistent/ca.pem' }] })).rejects.toThrow('/nonexistent/ca.pem');
  });
});
