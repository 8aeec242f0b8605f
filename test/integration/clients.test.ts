// Proves the client harness: a private containerd (ctr + hosts.toml), isolated skopeo and the
// fault-injecting fake upstream, against a real distribution registry. The error-message tests pin
// down what these clients print, so mirror tests can assert on it.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, request, get, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ctrContent, ctrImages, ctrPull, ctrRemove, startContainerd, writeHostsDir, type ContainerdHandle } from '../support/containerd.js';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { pushMultiPlatformImage, sha256, type PushedIndex } from '../support/images.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { skopeoCopyToDir, skopeoInspectRaw, skopeo } from '../support/skopeo.js';

const tempDirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'clients-test-'));
  tempDirs.push(dir);
  return dir;
}

/** Forwards everything to `target`, remembering each request target (with its query string). */
async function startLoggingProxy(target: string): Promise<{ url: string; seen: string[]; stop(): Promise<void> }> {
  const seen: string[] = [];
  const server: Server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const upstream = request(`${target}${req.url}`, { method: req.method, headers: { ...req.headers, host: new URL(target).host } }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    stop: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** GET over a fresh connection, returning what arrived before the body ended or broke. */
function rawGet(url: string): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    get(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const done = (): void => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete });
      res.on('end', done);
      res.on('error', done); // 'aborted' when the server cuts the body short
    }).on('error', reject);
  });
}

/** Whether a TCP connect is refused, accepted then closed by the server, or kept open (300 ms). */
function tcpProbe(port: number): Promise<'refused' | 'closed' | 'open'> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('open');
    }, 300);
    const closed = (state: 'refused' | 'closed') => {
      clearTimeout(timer);
      resolve(state);
    };
    socket.on('error', (err: NodeJS.ErrnoException) => closed(err.code === 'ECONNREFUSED' ? 'refused' : 'closed'));
    socket.on('close', () => closed('closed'));
  });
}

let registry: RegistryHandle;
let containerd: ContainerdHandle;
let fake: FakeUpstream;
let image: PushedIndex;

beforeAll(async () => {
  [registry, containerd, fake] = await Promise.all([startRegistry(), startContainerd(), startFakeUpstream()]);
  image = await pushMultiPlatformImage(registry.url, 'clients/multi', 'v1', { platforms: ['linux/amd64', 'linux/arm64'] });
});

afterAll(async () => {
  await Promise.all([registry?.stop(), containerd?.stop(), fake?.stop()]);
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
});

const childFor = (index: PushedIndex, arch: string) => index.children.find((c) => c.platform?.architecture === arch)!;

describe('containerd (ctr)', () => {
  it('pulls and unpacks one platform via a hosts.toml server entry', async () => {
    const ref = `${registry.host}/clients/multi:v1`;
    const hostsDir = await writeHostsDir(registry.host, { server: registry.url });
    const r = await ctrPull(containerd, ref, { hostsDir, platform: 'linux/arm64' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('unpacking linux/arm64');
    expect(await ctrImages(containerd)).toContain(ref);

    const content = await ctrContent(containerd);
    const arm64 = childFor(image, 'arm64');
    const amd64 = childFor(image, 'amd64');
    expect(content).toEqual(expect.arrayContaining([image.digest, arm64.digest, arm64.configDigest, ...arm64.layers.map((l) => l.digest)]));
    expect(content).not.toContain(amd64.digest);

    await ctrRemove(containerd, ref);
    expect(await ctrContent(containerd)).toEqual([]); // GC ran: the next pull fetches everything again
  });

  it('appends ?ns=<registry> to every request to a host that is not the registry itself', async () => {
    const proxy = await startLoggingProxy(registry.url);
    try {
      // Mirror entry for docker.io; the server is a closed port so nothing can bypass the mirror.
      let hostsDir = await writeHostsDir('docker.io', { server: 'http://127.0.0.1:1', mirrors: [proxy.url] });
      let r = await ctrPull(containerd, 'docker.io/clients/multi:v1', { hostsDir, platform: 'linux/amd64' });
      expect(r.code, r.stderr).toBe(0);
      expect(proxy.seen.length).toBeGreaterThanOrEqual(5); // HEAD tag, index, child, config, layer
      expect(proxy.seen.every((line) => line.endsWith('?ns=docker.io'))).toBe(true);
      expect(proxy.seen[0]).toBe('HEAD /v2/clients/multi/manifests/v1?ns=docker.io');
      await ctrRemove(containerd, 'docker.io/clients/multi:v1');

      // A registry named host:port gets the same treatment.
      proxy.seen.length = 0;
      hostsDir = await writeHostsDir(registry.host, { mirrors: [proxy.url] });
      r = await ctrPull(containerd, `${registry.host}/clients/multi:v1`, { hostsDir, platform: 'linux/amd64', unpack: false });
      expect(r.code, r.stderr).toBe(0);
      // The value is URL-encoded: `?ns=127.0.0.1%3A5000`.
      expect(proxy.seen.every((line) => line.endsWith(`?ns=${encodeURIComponent(registry.host)}`))).toBe(true);
      await ctrRemove(containerd, `${registry.host}/clients/multi:v1`);

      // Even a `server` pointing elsewhere than the registry name gets ?ns=.
      proxy.seen.length = 0;
      hostsDir = await writeHostsDir('docker.io', { server: proxy.url });
      r = await ctrPull(containerd, 'docker.io/clients/multi:v1', { hostsDir, platform: 'linux/amd64', unpack: false });
      expect(r.code, r.stderr).toBe(0);
      expect(proxy.seen.length).toBeGreaterThan(0);
      expect(proxy.seen.every((line) => line.endsWith('?ns=docker.io'))).toBe(true);
      await ctrRemove(containerd, 'docker.io/clients/multi:v1');
    } finally {
      await proxy.stop();
    }
  });

  it('reports 404 without and 403 with the server message (except on the HEAD that resolves a tag)', async () => {
    const img = fake.addImage('errors/ctr', 'v1');
    const hostsDir = await writeHostsDir(fake.host, { server: fake.url });
    const pull = (ref: string) => ctrPull(containerd, ref, { hostsDir, platform: 'linux/amd64', timeoutMs: 20_000 });
    try {
      const missing = `${fake.host}/errors/ctr:nope`;
      let r = await pull(missing);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`ctr: failed to resolve reference "${missing}": ${missing}: not found`);

      fake.failWith('/manifests/v1', 403, { message: 'pull access denied by policy' });
      r = await pull(`${fake.host}/errors/ctr:v1`);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`pulling from host ${fake.host} failed with status code [manifests v1]: 403 Forbidden\n`);
      fake.reset();

      const layer = img.children[0]!.layers[0]!.digest;
      fake.failWith(layer, 403, { message: 'pull access denied by policy' });
      r = await pull(`${fake.host}/errors/ctr:v1`);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`/v2/errors/ctr/blobs/${layer}: 403 Forbidden - Server message: denied: pull access denied by policy`);
      fake.reset();

      fake.failWith(layer, 404);
      r = await pull(`${fake.host}/errors/ctr:v1`);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`could not fetch content descriptor ${layer} (application/vnd.oci.image.layer.v1.tar+gzip) from remote: not found`);
    } finally {
      fake.reset();
      await ctrRemove(containerd, `${fake.host}/errors/ctr:v1`).catch(() => undefined);
    }
  });

  it('resumes a cut-off blob with Range requests but rejects corrupt content', async () => {
    const img = fake.addImage('faults/ctr', 'v1');
    const ref = `${fake.host}/faults/ctr:v1`;
    const hostsDir = await writeHostsDir(fake.host, { server: fake.url });
    const layer = img.children[0]!.layers[0]!.digest;
    try {
      fake.truncateAt(layer, 20, 1);
      let r = await ctrPull(containerd, ref, { hostsDir, platform: 'linux/amd64' });
      expect(r.code, r.stderr).toBe(0);
      expect(fake.requests.filter((q) => q.path.endsWith(layer)).map((q) => q.headers.range)).toEqual([undefined, 'bytes=20-']);
      await ctrRemove(containerd, ref);

      fake.reset();
      fake.corrupt(layer);
      r = await ctrPull(containerd, ref, { hostsDir, platform: 'linux/amd64' });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`unexpected commit digest sha256:`);
      expect(r.stderr).toContain(`expected ${layer}: failed precondition`);
    } finally {
      fake.reset();
      await ctrRemove(containerd, ref).catch(() => undefined);
    }
  });
});

describe('skopeo', () => {
  it('copies one platform to a dir and reads manifests byte-exact', async () => {
    const dir = await tempDir();
    const r = await skopeoCopyToDir(`docker://${registry.host}/clients/multi:v1`, dir, { os: 'linux', arch: 'arm64' });
    expect(r.code, r.stderr).toBe(0);
    const arm64 = childFor(image, 'arm64');
    expect((await readFile(join(dir, 'manifest.json'))).equals(arm64.bytes)).toBe(true);
    const layer = arm64.layers[0]!.digest;
    expect(sha256(await readFile(join(dir, layer.slice('sha256:'.length))))).toBe(layer);

    const raw = await skopeoInspectRaw(`docker://${registry.host}/clients/multi:v1`);
    expect(raw.equals(image.bytes)).toBe(true);
  });

  it('prints the server message for 404 and 403 manifests, only the status for blobs', async () => {
    const img = fake.addImage('errors/skopeo', 'v1');
    const inspect = (tag: string) => skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${fake.host}/errors/skopeo:${tag}`]);
    try {
      let r = await inspect('nope');
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`reading manifest nope in ${fake.host}/errors/skopeo: manifest unknown: manifest unknown: errors/skopeo:nope`);

      fake.failWith('/manifests/v1', 403, { message: 'pull access denied by policy' });
      r = await inspect('v1');
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`reading manifest v1 in ${fake.host}/errors/skopeo: denied: pull access denied by policy`);
      fake.reset();

      const layer = img.children[0]!.layers[0]!.digest;
      fake.failWith(layer, 403, { message: 'pull access denied by policy' });
      r = await skopeoCopyToDir(`docker://${fake.host}/errors/skopeo:v1`, await tempDir(), { os: 'linux', arch: 'amd64' });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`reading blob ${layer}: Error fetching blob: invalid status code from registry 403 (Forbidden)`);
    } finally {
      fake.reset();
    }
  });
});

describe('fake upstream', () => {
  it('serves manifests, blobs, ranges and tag lists with registry headers', async () => {
    const img = fake.addImage('fake/basic', 'v1');
    fake.tag('fake/basic', 'v2', img.digest);
    fake.tag('fake/basic', 'v3', img.digest);

    const head = await fetch(`${fake.url}/v2/fake/basic/manifests/v1`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('docker-content-digest')).toBe(img.digest);
    expect(head.headers.get('content-type')).toBe(img.mediaType);
    expect(head.headers.get('content-length')).toBe(String(img.bytes.length));

    const manifest = Buffer.from(await (await fetch(`${fake.url}/v2/fake/basic/manifests/${img.digest}`)).arrayBuffer());
    expect(manifest.equals(img.bytes)).toBe(true);

    const layer = img.children[0]!.layers[0]!.digest;
    const ranged = await fetch(`${fake.url}/v2/fake/basic/blobs/${layer}`, { headers: { range: 'bytes=10-19' } });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get('content-range')).toMatch(/^bytes 10-19\/\d+$/);
    expect((await ranged.arrayBuffer()).byteLength).toBe(10);

    const page = await fetch(`${fake.url}/v2/fake/basic/tags/list?n=2`);
    expect(await page.json()).toEqual({ name: 'fake/basic', tags: ['v1', 'v2'] });
    expect(page.headers.get('link')).toBe('</v2/fake/basic/tags/list?n=2&last=v2>; rel="next"');

    const missing = await fetch(`${fake.url}/v2/fake/basic/blobs/sha256:${'0'.repeat(64)}`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('BLOB_UNKNOWN');
    expect(fake.count('GET', '/v2/fake/basic/')).toBe(4);
  });

  it('truncates, corrupts, fails a limited number of times and delays', async () => {
    const img = fake.addImage('fake/faults', 'v1');
    const layer = img.children[0]!.layers[0]!;
    const blobUrl = `${fake.url}/v2/fake/faults/blobs/${layer.digest}`;
    try {
      fake.truncateAt(layer.digest, 20, 1);
      const cut = await rawGet(blobUrl);
      expect(cut.headers['content-length']).toBe(String(layer.size));
      expect(cut.body.length).toBe(20);
      expect(cut.complete).toBe(false);
      const whole = await rawGet(blobUrl); // the rule was for one response only
      expect(whole.complete).toBe(true);
      expect(sha256(whole.body)).toBe(layer.digest);

      fake.corrupt(layer.digest);
      const bad = await rawGet(blobUrl);
      expect(bad.body.length).toBe(layer.size);
      expect(bad.body.equals(whole.body)).toBe(false);
      expect(bad.headers['docker-content-digest']).toBe(layer.digest);
      fake.clearFaults();

      fake.failWith(/\/manifests\/v1$/, 503, 2);
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) statuses.push((await fetch(`${fake.url}/v2/fake/faults/manifests/v1`)).status);
      expect(statuses).toEqual([503, 503, 200]);

      fake.delay('/manifests/v1', 300, 1);
      const started = Date.now();
      await (await fetch(`${fake.url}/v2/fake/faults/manifests/v1`)).arrayBuffer();
      expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    } finally {
      fake.reset();
    }
  });

  it('goes down (refused or reset) and comes back on the same port', async () => {
    const port = Number(new URL(fake.url).port);
    try {
      await fake.down();
      expect(await tcpProbe(port)).toBe('refused');
      await fake.down('reset');
      expect(await tcpProbe(port)).toBe('closed');
    } finally {
      await fake.up();
    }
    expect(await tcpProbe(port)).toBe('open');
    expect((await fetch(`${fake.url}/v2/`)).status).toBe(200);
  });
});
