// Stored blobs served through the mirror, with sendfile (the default), with the copy that
// `blobs.copyToLocalClients` gives clients on this host, and through Node's streams: whole
// bodies, every kind of Range, HEAD, several requests on one keep-alive connection, a pull with
// skopeo. Every way must give the same bytes and headers as upstream.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { Agent, get, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { fetchBlob, pushSinglePlatformImage, MANIFEST_ACCEPT } from '../support/images.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { skopeoCopyToDir } from '../support/skopeo.js';
import { startTestMirror, type TestMirror } from '../support/mirror.js';

let upstream: RegistryHandle;
let image: Awaited<ReturnType<typeof pushSinglePlatformImage>>;
let layer: { digest: string; bytes: Buffer };

beforeAll(async () => {
  upstream = await startRegistry();
  // Random content compresses to nothing: the layer is about layerSize bytes, several MiB.
  image = await pushSinglePlatformImage(upstream.url, 'serve/blobs', '1.0', { layersPerImage: 1, layerSize: 6 * 1024 * 1024 });
  const digest = image.layers[0]!.digest;
  layer = { digest, bytes: await fetchBlob(upstream.url, 'serve/blobs', digest) };
});
afterAll(async () => {
  await upstream?.stop();
});

interface Got {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  port: number;
}

function request(url: string, opts: { method?: string; range?: string; agent?: Agent } = {}): Promise<Got> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { accept: MANIFEST_ACCEPT };
    if (opts.range) headers.range = opts.range;
    const req = get(url, { method: opts.method ?? 'GET', headers, agent: opts.agent ?? false }, (res) => {
      const port = res.socket.localPort ?? 0;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        if (!res.complete) return reject(new Error(`body of ${url} cut short after ${Buffer.concat(chunks).length} bytes`));
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), port });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const requestLines = (m: TestMirror): any[] => m.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request');

for (const [sendfile, copyToLocalClients] of [[true, false], [true, true], [false, false]] as const) {
  describe(`stored blobs, sendfile ${sendfile ? 'on' : 'off'}${copyToLocalClients ? ', copied for clients on this host' : ''}`, () => {
    let mirror: TestMirror;
    let blobUrl: string;

    beforeAll(async () => {
      mirror = await startTestMirror({ upstreams: [{ url: upstream.url }], blobs: { sendfile, copyToLocalClients } });
      const manifest = await request(`${mirror.url}/v2/serve/blobs/manifests/1.0`);
      expect(manifest.status).toBe(200);
      blobUrl = `${mirror.url}/v2/serve/blobs/blobs/${layer.digest}`;
      const cold = await request(blobUrl); // fetched through, now stored
      expect(sha(cold.body)).toBe(sha(layer.bytes));
    });
    afterAll(async () => {
      await mirror?.stop({ removeData: true });
    });

    it('says at start-up how it serves blobs', () => {
      const started = mirror.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'sparse-mirror listening');
      expect(started.sendfile).toBe(sendfile ? process.platform === 'linux' : 'off');
    });

    it('serves the whole blob from the store with registry headers', async () => {
      const r = await request(blobUrl);
      expect(r.status).toBe(200);
      expect(r.headers['content-length']).toBe(String(layer.bytes.length));
      expect(r.headers['docker-content-digest']).toBe(layer.digest);
      expect(r.headers['accept-ranges']).toBe('bytes');
      expect(`sha256:${sha(r.body)}`).toBe(layer.digest);
      // Logged once the body has gone out, which can be a moment after the client has it.
      await vi.waitFor(() => {
        const logged = requestLines(mirror).filter((l) => l.path.endsWith(layer.digest));
        expect(logged.length).toBe(2); // the cold fetch in beforeAll, and this one
        expect(logged.at(-1)).toMatchObject({ status: 200, cache: 'hit', bytes: layer.bytes.length });
      });
    });

    it('serves ranges: start, middle, open-ended, suffix, last byte', async () => {
      const n = layer.bytes.length;
      const cases: Array<[string, number, number]> = [
        ['bytes=0-0', 0, 0],
        ['bytes=1000-1999999', 1000, 1999999],
        [`bytes=${n - 3000}-`, n - 3000, n - 1],
        ['bytes=-4096', n - 4096, n - 1],
        [`bytes=${n - 1}-${n + 50}`, n - 1, n - 1],
      ];
      for (const [range, start, end] of cases) {
        const r = await request(blobUrl, { range });
        expect(r.status, range).toBe(206);
        expect(r.headers['content-range'], range).toBe(`bytes ${start}-${end}/${n}`);
        expect(r.body.equals(layer.bytes.subarray(start, end + 1)), range).toBe(true);
      }
      const outside = await request(blobUrl, { range: `bytes=${n}-` });
      expect(outside.status).toBe(416);
    });

    it('answers HEAD without a body', async () => {
      const r = await request(blobUrl, { method: 'HEAD' });
      expect(r.status).toBe(200);
      expect(r.headers['content-length']).toBe(String(layer.bytes.length));
      expect(r.body.length).toBe(0);
    });

    it('keeps a connection usable across bodies (keep-alive)', async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const ports = new Set<number>();
        for (const range of [undefined, 'bytes=5-10', undefined, 'bytes=-1']) {
          const r = await request(blobUrl, { range, agent });
          ports.add(r.port);
          const expected = range === 'bytes=5-10' ? layer.bytes.subarray(5, 11) : range ? layer.bytes.subarray(-1) : layer.bytes;
          expect(r.body.equals(expected)).toBe(true);
        }
        const manifest = await request(`${mirror.url}/v2/serve/blobs/manifests/1.0`, { agent });
        expect(manifest.body.equals(image.bytes)).toBe(true);
        expect(ports.size).toBe(1);
      } finally {
        agent.destroy();
      }
    });

    it('answers pipelined requests in order (two GETs sent at once on one connection)', async () => {
      const { port, pathname } = new URL(blobUrl);
      const socket = connect(Number(port), '127.0.0.1');
      const received: Buffer[] = [];
      socket.on('data', (c: Buffer) => received.push(c));
      await once(socket, 'connect');
      socket.write(`GET ${pathname} HTTP/1.1\r\nHost: m\r\n\r\nGET ${pathname} HTTP/1.1\r\nHost: m\r\nRange: bytes=7-99\r\nConnection: close\r\n\r\n`);
      await once(socket, 'close');
      const all = Buffer.concat(received);
      const bodies: Buffer[] = [];
      let at = 0;
      for (let i = 0; i < 2; i++) {
        const headEnd = all.indexOf('\r\n\r\n', at);
        const length = /content-length: (\d+)/i.exec(all.subarray(at, Math.max(at, headEnd)).toString('latin1'))?.[1];
        expect(length, `response ${i + 1}`).toBeDefined();
        bodies.push(all.subarray(headEnd + 4, headEnd + 4 + Number(length)));
        at = headEnd + 4 + Number(length);
      }
      expect(at).toBe(all.length);
      expect(bodies[0]!.equals(layer.bytes)).toBe(true);
      expect(bodies[1]!.equals(layer.bytes.subarray(7, 100))).toBe(true);
    });

    it('serves 8 clients at once, each the right bytes', async () => {
      const bodies = await Promise.all(Array.from({ length: 8 }, () => request(blobUrl)));
      for (const r of bodies) expect(`sha256:${sha(r.body)}`).toBe(layer.digest);
    });

    it('gives skopeo the same image as upstream', async () => {
      const dest = await mkdtemp(join(tmpdir(), 'serve-blobs-'));
      try {
        const r = await skopeoCopyToDir(`docker://${mirror.host}/serve/blobs:1.0`, dest);
        expect(r.code, r.stderr).toBe(0);
        const copied = await readFile(join(dest, layer.digest.slice('sha256:'.length)));
        expect(copied.equals(layer.bytes)).toBe(true);
      } finally {
        await rm(dest, { recursive: true, force: true });
      }
    });
  });
}

describe('the request log line of a blob', () => {
  let mirror: TestMirror;
  let big: { digest: string; size: number; url: string };
  const linesFor = (digest: string) => requestLines(mirror).filter((l) => l.path.endsWith(digest));

  beforeAll(async () => {
    // Larger than loopback's socket buffers, so that a client that stops reading holds the body up.
    const pushed = await pushSinglePlatformImage(upstream.url, 'serve/big', '1.0', { layersPerImage: 1, layerSize: 48 * 1024 * 1024 });
    mirror = await startTestMirror({ upstreams: [{ url: upstream.url }] });
    expect((await request(`${mirror.url}/v2/serve/big/manifests/1.0`)).status).toBe(200);
    const l = pushed.layers[0]!;
    big = { digest: l.digest, size: l.size, url: `${mirror.url}/v2/serve/big/blobs/${l.digest}` };
    expect((await request(big.url)).body.length).toBe(big.size); // stored now
    await vi.waitFor(() => expect(linesFor(big.digest)).toHaveLength(1));
  }, 120_000);
  afterAll(async () => {
    await mirror?.stop({ removeData: true });
  });

  it('is written when the body has gone out, and its ms covers the whole body', async () => {
    const before = linesFor(big.digest).length;
    const received = await new Promise<number>((resolve, reject) => {
      get(big.url, { agent: false }, (res) => {
        res.pause(); // a slow client: nothing read for 500 ms
        setTimeout(() => {
          try {
            expect(linesFor(big.digest).length).toBe(before); // still going out: not logged yet
          } catch (e) {
            reject(e);
          }
          let n = 0;
          res.on('data', (c: Buffer) => (n += c.length));
          res.on('end', () => resolve(n));
          res.resume();
        }, 500);
      }).on('error', reject);
    });
    expect(received).toBe(big.size);
    await vi.waitFor(() => expect(linesFor(big.digest).length).toBe(before + 1));
    const line = linesFor(big.digest).at(-1);
    expect(line).toMatchObject({ status: 200, bytes: big.size, cache: 'hit' });
    expect(line.ms).toBeGreaterThanOrEqual(500);
  });
});
