// The mirror behind an egress proxy set the Go way (HTTP_PROXY in its environment): the upstream
// registry runs in a network namespace made here, listening on that namespace's loopback, so the
// only way in is a real tinyproxy running in the namespace too. Its credentials never show.
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Agent, ProxyAgent, request } from 'undici';
import { beforeAll, describe, expect, it } from 'vitest';
import { envWithoutProxies } from '../support/exec.js';
import { useFixture } from '../support/fixture.js';
import { MANIFEST_ACCEPT, pushMultiPlatformImage, type PushedIndex } from '../support/images.js';
import { makeNetns, type Netns } from '../support/netns.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { startTinyproxy, type Tinyproxy } from '../support/tinyproxy.js';

const REGISTRY_NAME = 'registry.smtest';
const USER = 'egress';
const PASSWORD = `egress-${Math.random().toString(36).slice(2)}-pw`;

let image: PushedIndex;
let ns: Netns;
let proxy: Tinyproxy;
let mirror: TestMirror;

const fx = useFixture({
  registry: true,
  images: async ({ registry }) => {
    image = await pushMultiPlatformImage(registry.url, 'team/app', '1.0', { platforms: ['linux/amd64', 'linux/arm64', 'linux/s390x'] });
    return undefined;
  },
});

beforeAll(async () => {
  ns = await makeNetns({ [REGISTRY_NAME]: '127.0.0.1' });
  fx.defer(() => ns.remove());
  // The pushed images' storage, served again inside the namespace on its loopback only.
  const dir = await fx.tempDir('sm-nsreg-');
  const config = join(dir, 'config.yml');
  await writeFile(config, JSON.stringify({
    version: 0.1,
    log: { level: 'warn', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: fx.registry.dir }, maintenance: { uploadpurging: { enabled: false } } },
    http: { addr: '127.0.0.1:5000', secret: 'egress-test' },
  }));
  const [cmd, args] = ns.inNetns(['docker-registry', 'serve', config]);
  const registry = spawn(cmd, args, { env: envWithoutProxies(), stdio: 'ignore' });
  fx.defer(() => void registry.kill('SIGKILL'));
  proxy = await startTinyproxy({ basicAuth: { user: USER, password: PASSWORD }, listen: ns.address, wrap: ns.inNetns });
  fx.defer(() => proxy.stop());
  const withCreds = `http://${USER}:${PASSWORD}@${ns.address}:${proxy.port}`;
  // Ready once the registry answers through the proxy.
  const probe = new ProxyAgent({ uri: withCreds });
  for (let i = 0; ; i++) {
    const ok = await request(`http://${REGISTRY_NAME}:5000/v2/`, { dispatcher: probe }).then((r) => (r.body.dump(), r.statusCode === 200), () => false);
    if (ok) break;
    if (i > 100) throw new Error('registry in the namespace did not come up behind the proxy');
    await new Promise((r) => setTimeout(r, 100));
  }
  await probe.close();

  // The environment a Go program would read; the mirror reads it when it builds its upstream clients.
  const saved = { HTTP_PROXY: process.env.HTTP_PROXY, NO_PROXY: process.env.NO_PROXY };
  process.env.HTTP_PROXY = withCreds;
  process.env.NO_PROXY = 'localhost';
  try {
    mirror = await startTestMirror({ upstreams: [{ url: `http://${REGISTRY_NAME}:5000` }] });
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
  fx.defer(() => mirror.stop({ removeData: true }));
}, 60_000);

describe('a mirror whose upstream is reachable only through an HTTP proxy', () => {
  it('the upstream cannot be reached directly', async () => {
    const refused = await new Promise<string>((resolve) => {
      const s = connect(5000, ns.address);
      s.once('connect', () => (s.destroy(), resolve('connected')));
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    expect(refused).toBe('ECONNREFUSED');
  });

  it('pulls through the proxy named by HTTP_PROXY: index byte for byte, child and blob', async () => {
    const direct = new Agent();
    const index = await request(`${mirror.url}/v2/team/app/manifests/1.0`, { dispatcher: direct, headers: { accept: MANIFEST_ACCEPT } });
    expect(index.statusCode).toBe(200);
    expect(Buffer.from(await index.body.arrayBuffer()).equals(image.bytes)).toBe(true);
    const arm64 = image.children.find((c) => c.platform?.architecture === 'arm64')!;
    const child = await request(`${mirror.url}/v2/team/app/manifests/${arm64.digest}`, { dispatcher: direct, headers: { accept: MANIFEST_ACCEPT } });
    expect(child.statusCode).toBe(200);
    await child.body.dump();
    const blob = await request(`${mirror.url}/v2/team/app/blobs/${arm64.layers[0]!.digest}`, { dispatcher: direct });
    expect(blob.statusCode).toBe(200);
    expect((await blob.body.arrayBuffer()).byteLength).toBe(arm64.layers[0]!.size);
    expect(await proxy.log()).toContain(`${REGISTRY_NAME}:5000`);
    await direct.close();
  });

  it('never shows the proxy\'s credentials in a log line or a response', async () => {
    const s390x = image.children.find((c) => c.platform?.architecture === 's390x')!;
    const refused = await fetch(`${mirror.url}/v2/team/app/manifests/${s390x.digest}`, { headers: { accept: MANIFEST_ACCEPT } });
    expect(refused.status).toBe(403);
    expect(await refused.text()).not.toContain(PASSWORD);
    const missing = await fetch(`${mirror.url}/v2/team/nothing/manifests/1.0`, { headers: { accept: MANIFEST_ACCEPT } });
    expect(missing.status).toBe(404);
    expect(await missing.text()).not.toContain(PASSWORD);
    const logs = mirror.logs.join('\n');
    expect(logs).toContain(`"proxy":"http://${ns.address}:${proxy.port}"`);
    expect(logs).not.toContain(PASSWORD);
  });
});
