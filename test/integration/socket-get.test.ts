// Blob downloads read straight off the socket (src/upstream/socket-get.ts, through
// UpstreamClient.download): against a real docker-registry over HTTP and over TLS with a private
// CA, and one on object storage (the run's RGW) that redirects blob GETs to presigned S3 URLs.
// The faults a real server does not make on cue (an idle connection closed, a body cut short, a
// chunked body, a header that would smuggle another) come from an in-process server.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { UpstreamClient, type DownloadResponse } from '../../src/upstream/client.js';
import { isLent, type LentBody } from '../../src/upstream/lent-body.js';
import { KeptConnections, socketGet } from '../../src/upstream/socket-get.js';
import { exec } from '../support/exec.js';
import { pushBlob } from '../support/images.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { freshBucket, s3Client } from '../support/s3.js';
import { makeCa } from '../support/tls.js';

const REPO = 'team/blobs';
const big = randomBytes(3 * 1024 * 1024 + 17);
const one = Buffer.from([42]);
const empty = Buffer.alloc(0);
const sha = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let registry: RegistryHandle;
let tlsRegistry: RegistryHandle;
let s3Registry: RegistryHandle;
let caPem: Buffer;
const clients: UpstreamClient[] = [];

function client(url: string, ca?: Buffer): UpstreamClient {
  const c = new UpstreamClient(
    { url, timeouts: { connectMs: 5000, headersMs: 10_000, bodyIdleMs: 2000 }, attempts: 1, maxManifestBytes: 4 << 20, transport: { ca } },
    silentLogger,
  );
  clients.push(c);
  return c;
}

/** Reads a download's body, copying each lent piece (as the store does) before handing it back. */
async function readBody(res: DownloadResponse): Promise<Buffer> {
  if (!isLent(res.body)) {
    const chunks: Buffer[] = [];
    for await (const c of res.body as Readable) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }
  const body: LentBody = res.body;
  const pieces: Buffer[] = [];
  return new Promise((resolve, reject) =>
    body.start({ data: (p) => (pieces.push(Buffer.from(p)), true), end: () => resolve(Buffer.concat(pieces)), error: reject }),
  );
}

/** Established TCP connections to `port`, as `ss` lists them (their local ports). */
async function connectionsTo(port: number): Promise<string[]> {
  const r = await exec('ss', ['-tnH', 'state', 'established', `( dport = :${port} )`]);
  return r.stdout.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)[2]!);
}

beforeAll(async () => {
  registry = await startRegistry();
  for (const b of [big, one, empty]) await pushBlob(registry.url, REPO, b);
  const ca = await makeCa();
  caPem = ca.certPem;
  const cert = await ca.issue('registry', 'server');
  tlsRegistry = await startRegistry({ storageDir: registry.dir, tls: { certificate: cert.cert, key: cert.key } });
  const rgw = inject('s3');
  const bucket = await freshBucket(s3Client(rgw), 'socket-get');
  s3Registry = await startRegistry({ s3: { ...rgw, bucket } });
  await pushBlob(s3Registry.url, REPO, big);
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all([registry, tlsRegistry, s3Registry].map((r) => r?.stop()));
});

describe('blob downloads read off the socket, against real registries', () => {
  it('reads a blob byte for byte, and the next one on the same connection', async () => {
    const c = client(registry.url);
    const port = Number(new URL(registry.url).port);
    const before = await connectionsTo(port); // this process's own, from pushing the blobs
    const first = await c.download(REPO, sha(big));
    expect(isLent(first.body)).toBe(true);
    expect(first).toMatchObject({ offset: 0, size: big.length });
    expect((await readBody(first)).equals(big)).toBe(true);
    const afterFirst = await connectionsTo(port);
    const kept = afterFirst.filter((c) => !before.includes(c));
    expect(kept).toHaveLength(1);
    const second = await c.download(REPO, sha(big));
    expect((await readBody(second)).equals(big)).toBe(true);
    const afterSecond = await connectionsTo(port);
    expect(afterSecond).toContain(kept[0]); // the same connection, kept between them
    expect(afterSecond.filter((c) => !afterFirst.includes(c))).toEqual([]);
  });

  it('reads empty and one-byte blobs, whose bodies come with the head', async () => {
    const c = client(registry.url);
    for (const b of [empty, one, empty]) {
      const res = await c.download(REPO, sha(b));
      expect(res.size).toBe(b.length);
      expect((await readBody(res)).equals(b)).toBe(true);
    }
  });

  it('reads nothing more while the reader holds a piece, until it hands it back', async () => {
    const res = await client(registry.url).download(REPO, sha(big));
    const body = res.body as LentBody;
    const pieces: Buffer[] = [];
    let ended = false;
    let failed: Error | undefined;
    body.start({
      data: (p) => {
        pieces.push(Buffer.from(p));
        return pieces.length !== 1; // hold the first piece
      },
      end: () => (ended = true),
      error: (e) => (failed = e),
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(pieces).toHaveLength(1);
    body.resume();
    for (let i = 0; i < 100 && !ended && !failed; i++) await new Promise((r) => setTimeout(r, 20));
    expect(failed).toBeUndefined();
    expect(ended).toBe(true);
    expect(Buffer.concat(pieces).equals(big)).toBe(true);
  });

  it('resumes from an offset with a range request', async () => {
    const res = await client(registry.url).download(REPO, sha(big), 1_000_000);
    expect(res.offset).toBe(1_000_000);
    expect(res.size).toBe(big.length);
    expect((await readBody(res)).equals(big.subarray(1_000_000))).toBe(true);
  });

  it('reads over TLS from a registry with a private CA', async () => {
    const res = await client(tlsRegistry.url.replace('http:', 'https:'), caPem).download(REPO, sha(big));
    expect(isLent(res.body)).toBe(true);
    expect((await readBody(res)).equals(big)).toBe(true);
  });

  it('follows a registry on object storage to its presigned S3 URL, byte for byte', async () => {
    // The registry really redirects: 307 to the S3 server, not the blob.
    const head = await fetch(`${s3Registry.url}/v2/${REPO}/blobs/${sha(big)}`, { redirect: 'manual' });
    expect(head.status).toBe(307);
    expect(new URL(head.headers.get('location')!).origin).toBe(new URL(inject('s3').endpoint).origin);
    const res = await client(s3Registry.url).download(REPO, sha(big));
    expect(isLent(res.body)).toBe(true);
    expect((await readBody(res)).equals(big)).toBe(true);
  });

  it('leaves anything but a blob body to the usual path: an unknown blob is not_found', async () => {
    await expect(client(registry.url).download(REPO, sha(randomBytes(8)))).rejects.toMatchObject({ failure: 'not_found' });
  });
});

describe('blob downloads read off the socket, faults', () => {
  let server: NetServer;
  let base: string;
  /** Answers the `nth` request (from 1) on a connection; a raw server, so that it can misbehave. */
  let handle: (nth: number, socket: Socket) => void;
  const bytes = randomBytes(200_000);
  const requests = new WeakMap<Socket, string>();
  const lastRequest = (socket: Socket) => requests.get(socket) ?? '';

  beforeAll(async () => {
    server = createNetServer((socket) => {
      let seen = '';
      let nth = 0;
      socket.on('error', () => {});
      socket.on('data', (d) => {
        seen += d.toString('latin1');
        for (let end = seen.indexOf('\r\n\r\n'); end >= 0; end = seen.indexOf('\r\n\r\n')) {
          requests.set(socket, seen.slice(0, end));
          seen = seen.slice(end + 4);
          handle(++nth, socket);
        }
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => server.close());

  const ok = (length: number) => `HTTP/1.1 200 OK\r\ncontent-length: ${length}\r\n\r\n`;

  it('a kept connection the server drops when the next request comes: that blob comes on a new one', async () => {
    handle = (nth, socket) => (nth === 1 ? socket.write(Buffer.concat([Buffer.from(ok(bytes.length)), bytes])) : socket.destroy());
    const c = client(base);
    expect((await readBody(await c.download(REPO, sha(bytes)))).equals(bytes)).toBe(true);
    const again = await c.download(REPO, sha(bytes));
    expect(isLent(again.body)).toBe(true);
    expect((await readBody(again)).equals(bytes)).toBe(true);
  });

  it('a body cut short fails with what arrived', async () => {
    handle = (_, socket) => socket.end(Buffer.concat([Buffer.from(ok(bytes.length)), bytes.subarray(0, 70_000)]));
    const res = await client(base).download(REPO, sha(bytes));
    await expect(readBody(res)).rejects.toThrow(/closed the connection/);
  });

  it('a body that goes silent fails after the idle timeout', async () => {
    handle = (_, socket) => socket.write(Buffer.concat([Buffer.from(ok(bytes.length)), bytes.subarray(0, 1000)]));
    const res = await client(base).download(REPO, sha(bytes));
    await expect(readBody(res)).rejects.toThrow(/sent nothing for 2000 ms/);
  });

  it('a chunked body is not read here: the usual path gets it', async () => {
    const chunked = `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${bytes.length.toString(16)}\r\n`;
    handle = (_, socket) => socket.write(Buffer.concat([Buffer.from(chunked), bytes, Buffer.from('\r\n0\r\n\r\n')]));
    const res = await client(base).download(REPO, sha(bytes));
    expect(isLent(res.body)).toBe(false);
    expect((await readBody(res)).equals(bytes)).toBe(true);
  });

  it('never takes the registry\'s credentials along a redirect to another origin', async () => {
    const seenElsewhere: string[] = [];
    const elsewhere = createNetServer((socket) => {
      socket.on('data', (d) => {
        seenElsewhere.push(d.toString('latin1'));
        socket.write(Buffer.concat([Buffer.from(ok(bytes.length)), bytes]));
      });
    });
    elsewhere.listen(0, '127.0.0.1');
    await once(elsewhere, 'listening');
    const cdn = `http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}/blob?signed=1`;
    const credentialsSeen: boolean[] = [];
    handle = (_, socket) => {
      const authorized = /authorization: Basic /i.test(lastRequest(socket));
      credentialsSeen.push(authorized);
      socket.write(
        authorized
          ? `HTTP/1.1 307 Temporary Redirect\r\nlocation: ${cdn}\r\ncontent-length: 0\r\n\r\n`
          : 'HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm="r"\r\ncontent-length: 0\r\n\r\n',
      );
    };
    try {
      const c = new UpstreamClient(
        { url: base, credentials: { username: 'u', password: 'secret' }, timeouts: { connectMs: 5000, headersMs: 5000, bodyIdleMs: 2000 }, attempts: 1, maxManifestBytes: 1 << 20, transport: {} },
        silentLogger,
      );
      clients.push(c);
      // The first learns the challenge (the usual path); the second is read off the socket.
      for (const lent of [false, true]) {
        const res = await c.download(REPO, sha(bytes));
        expect(isLent(res.body)).toBe(lent);
        expect((await readBody(res)).equals(bytes)).toBe(true);
      }
      expect(credentialsSeen).toContain(true);
      expect(seenElsewhere).toHaveLength(2);
      for (const request of seenElsewhere) expect(request).not.toMatch(/authorization/i);
    } finally {
      elsewhere.close();
    }
  });

  it('refuses a header value that would smuggle another header, before sending anything', async () => {
    let asked = 0;
    handle = (_, socket) => (asked++, socket.destroy());
    const url = new URL(`${base}/v2/x/blobs/y`);
    const opts = { headers: { authorization: 'Bearer t\r\nx-evil: 1' }, tls: {}, connectMs: 1000, headersMs: 1000, bodyIdleMs: 1000 };
    await expect(socketGet(url, opts, new KeptConnections())).rejects.toThrow(/invalid request header authorization/);
    expect(asked).toBe(0);
  });
});
