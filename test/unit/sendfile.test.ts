// The sendfile addon on real sockets, in both its modes (sendfile(2), and the copy through a
// buffer that clients on this host get with `blobs.copyToLocalClients`): whole files and ranges,
// keep-alive after a sent body, a file shorter than promised, a client that goes away, a client
// that stops reading while the server shuts down. Every case also checks that no descriptor is
// left behind.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, open, readdir, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { Agent, createServer, get, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canSendfile, copiesFor, onThisHost, sendFileRegions, sendfileStatus } from '../../src/http/sendfile.js';

const SIZE = 48 * 1024 * 1024 + 12345; // larger than any socket buffer: many writable events
let dir: string;
let path: string;
let bytes: Buffer;

/** `seq`: the request's place in the order the server received requests (from 0). */
type Handler = (res: ServerResponse, file: FileHandle, seq: number) => Promise<void>;
let arrivals = 0;
let server: Server;
let url: string;
let handler: Handler;
const outcomes: Array<Promise<unknown>> = [];
/** The mode the tests of a describe.each block run in. */
const mode = { copy: false };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sendfile-test-'));
  path = join(dir, 'blob');
  bytes = randomBytes(SIZE);
  await writeFile(path, bytes);
  server = createServer((req, res) => {
    // Numbered on arrival: the opens below may complete in any order.
    const seq = arrivals++;
    void (async () => {
      const file = await open(path, 'r');
      const outcome = handler(res, file, seq).finally(() => file.close());
      outcomes.push(outcome.catch(() => {}));
    })();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server?.closeAllConnections();
  server?.close();
  await rm(dir, { recursive: true, force: true });
});

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function openFds(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

/** Serves [offset, offset+length) with the headers a blob response has. */
function serveRange(offset: number, length: number, declared = length): Handler {
  return async (res, file) => {
    res.setHeader('Content-Length', String(declared));
    res.writeHead(offset === 0 && declared === SIZE ? 200 : 206);
    await sendFileRegions(res, [{ fd: file.fd, start: offset, length }], mode);
  };
}

/** GET; without an agent on a connection of its own that closes after the response. */
function fetchBody(target: string, agent?: Agent): Promise<{ res: IncomingMessage; body: Buffer; complete: boolean; port: number }> {
  return new Promise((resolve, reject) => {
    get(target, { agent: agent ?? false }, (res) => {
      const port = res.socket.localPort ?? 0;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ res, body: Buffer.concat(chunks), complete: res.complete, port }));
      res.on('error', () => resolve({ res, body: Buffer.concat(chunks), complete: false, port }));
    }).on('error', reject);
  });
}

/** Sends `count` GETs on one connection at once (HTTP pipelining) and returns the bodies in order. */
async function pipelinedGets(count: number): Promise<Buffer[]> {
  const socket = connect(new URL(url).port ? Number(new URL(url).port) : 80, '127.0.0.1');
  const received: Buffer[] = [];
  socket.on('data', (c: Buffer) => received.push(c));
  await once(socket, 'connect');
  const request = (last: boolean) => `GET / HTTP/1.1\r\nHost: x\r\n${last ? 'Connection: close\r\n' : ''}\r\n`;
  socket.write(Array.from({ length: count }, (_, i) => request(i === count - 1)).join(''));
  await once(socket, 'close');
  const all = Buffer.concat(received);
  const bodies: Buffer[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    const headEnd = all.indexOf('\r\n\r\n', at);
    const match = /content-length: (\d+)/i.exec(all.subarray(at, Math.max(at, headEnd)).toString('latin1'));
    if (headEnd < 0 || !match) throw new Error(`response ${i + 1} of ${count} is missing (${all.length} bytes in all)`);
    bodies.push(all.subarray(headEnd + 4, headEnd + 4 + Number(match[1])));
    at = headEnd + 4 + Number(match[1]);
  }
  expect(at).toBe(all.length);
  return bodies;
}

/** Descriptors return to where they were once the server has let go (the addon's dups included). */
async function expectNoLeak(before: number): Promise<void> {
  await Promise.all(outcomes.splice(0));
  for (let i = 0; i < 50 && (await openFds()) > before; i++) await new Promise((r) => setTimeout(r, 20));
  expect(await openFds()).toBeLessThanOrEqual(before);
}

describe.runIf(process.platform === 'linux')('sendfile addon', () => {
  it('is built and loads on Linux (a broken build must not fall back silently)', () => {
    expect(sendfileStatus()).toEqual({ available: true });
  });

  it('is only offered on a plain socket', () => {
    expect(canSendfile({ socket: null } as unknown as ServerResponse)).toBe(false);
  });

  it('copies only for clients on this host, and only where the config asks', () => {
    const from = (remoteAddress: string | undefined) => ({ socket: { remoteAddress } }) as unknown as ServerResponse;
    const local = ['127.0.0.1', '127.3.2.1', '::1', '::ffff:127.0.0.1'];
    const remote = ['10.0.0.7', '::ffff:192.168.1.2', '2001:db8::1', undefined];
    for (const address of local) expect([onThisHost(address), copiesFor(from(address), true), copiesFor(from(address), false)]).toEqual([true, true, false]);
    for (const address of remote) expect([onThisHost(address), copiesFor(from(address), true), copiesFor(from(address), false)]).toEqual([false, false, false]);
  });
});

describe.runIf(process.platform === 'linux').each([
  ['sendfile(2)', false],
  ['a copy through a buffer', true],
])('sendfile addon, sending with %s', (_, copy) => {
  beforeAll(() => {
    mode.copy = copy;
  });

  it('sends a whole file, byte for byte', async () => {
    const before = await openFds();
    handler = serveRange(0, SIZE);
    const { res, body, complete } = await fetchBody(`${url}/`);
    expect(res.statusCode).toBe(200);
    expect(complete).toBe(true);
    expect(body.length).toBe(SIZE);
    expect(sha(body)).toBe(sha(bytes));
    await expectNoLeak(before);
  });

  it('sends a range from an offset', async () => {
    handler = serveRange(7_000_001, 3_333_333);
    const { res, body } = await fetchBody(`${url}/`);
    expect(res.statusCode).toBe(206);
    expect(sha(body)).toBe(sha(bytes.subarray(7_000_001, 7_000_001 + 3_333_333)));
  });

  it('leaves the connection usable for the next request (keep-alive)', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const ports = new Set<number>();
    try {
      for (const [offset, length] of [[0, 1000], [SIZE - 5000, 5000], [1, SIZE - 1]] as const) {
        handler = serveRange(offset, length);
        const { body, port } = await fetchBody(`${url}/`, agent);
        ports.add(port);
        expect(sha(body)).toBe(sha(bytes.subarray(offset, offset + length)));
      }
      expect(ports.size).toBe(1); // all three on one connection
    } finally {
      agent.destroy();
    }
  });

  it('is not offered to a pipelined response before its turn (the one before still sending)', async () => {
    const offered: boolean[] = [];
    const firstSeq = arrivals;
    let secondHandled!: () => void;
    const second = new Promise<void>((resolve) => (secondHandled = resolve));
    handler = async (res, file, seq) => {
      const first = seq === firstSeq;
      offered[seq - firstSeq] = canSendfile(res);
      if (!first) secondHandled();
      res.setHeader('Content-Length', String(first ? 3_000_000 : 20));
      res.writeHead(first ? 200 : 206);
      // The first body is not sent until the second request is being handled, so that it is
      // surely still sending then (on a busy machine it could otherwise be done already).
      if (first) await Promise.race([second, new Promise((r) => setTimeout(r, 2000))]);
      if (canSendfile(res)) await sendFileRegions(res, [{ fd: file.fd, start: 0, length: 3_000_000 }], mode);
      else res.end(bytes.subarray(10, 30)); // what blobResponse does then: Node's own stream
    };
    const parts = await pipelinedGets(2);
    expect(offered).toEqual([true, false]);
    expect(parts[0]!.equals(bytes.subarray(0, 3_000_000))).toBe(true);
    expect(parts[1]!.equals(bytes.subarray(10, 30))).toBe(true);
  });

  it('cuts the connection short when the file is shorter than promised', async () => {
    const before = await openFds();
    let failure: Error | undefined;
    handler = async (res, file) => {
      await serveRange(SIZE - 1000, 2000)(res, file, 0).catch((e: Error) => {
        failure = e;
      });
    };
    const { body, complete } = await fetchBody(`${url}/`);
    await expectNoLeak(before);
    expect(complete).toBe(false);
    expect(body.length).toBe(1000);
    expect(failure?.message).toMatch(/sendfile stopped after 1000 of 2000 bytes: EOF/);
  });

  it('stops and lets go of the socket when the client goes away', async () => {
    const before = await openFds();
    let failure: Error | undefined;
    handler = async (res, file) => {
      await serveRange(0, SIZE)(res, file, 0).catch((e: Error) => {
        failure = e;
      });
    };
    await new Promise<void>((resolve, reject) => {
      const req = get(`${url}/`, { agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => {});
      req.on('close', resolve);
      setTimeout(() => reject(new Error('no data')), 5000);
    });
    await expectNoLeak(before);
    expect(failure).toBeDefined();
  });

  it('is cancelled when the server closes a connection whose client stopped reading', async () => {
    const before = await openFds();
    let failure: Error | undefined;
    let started!: () => void;
    const serving = new Promise<void>((r) => (started = r));
    handler = async (res, file) => {
      started();
      await serveRange(0, SIZE)(res, file, 0).catch((e: Error) => {
        failure = e;
      });
    };
    const req = get(`${url}/`, { agent: false }, (res) => res.pause()); // reads nothing: the socket buffer fills
    req.on('error', () => {});
    await serving;
    await new Promise((r) => setTimeout(r, 200));
    server.closeAllConnections(); // what shutdown does after its grace period
    await Promise.all(outcomes.splice(0));
    expect(failure?.message).toMatch(/ECANCELED/);
    req.destroy();
    await expectNoLeak(before);
  });

  it('sends regions as they arrive, then ends the response', async () => {
    const parts: Array<[number, number]> = [[0, 100_000], [100_000, 5_000_000], [5_100_000, 1], [5_100_001, 20_000_000]];
    handler = async (res, file) => {
      res.setHeader('Content-Length', String(5_100_001 + 20_000_000));
      res.writeHead(200);
      await sendFileRegions(
        res,
        (async function* () {
          for (const [start, length] of parts) {
            await new Promise((r) => setTimeout(r, 30)); // a download that is still growing
            yield { fd: file.fd, start, length };
          }
        })(),
        mode,
      );
    };
    const { body, complete } = await fetchBody(`${url}/`);
    expect(complete).toBe(true);
    expect(sha(body)).toBe(sha(bytes.subarray(0, 25_100_001)));
  });

  it('cuts the connection when the regions fail part-way (a download that fails)', async () => {
    const before = await openFds();
    let failure: Error | undefined;
    handler = async (res, file) => {
      res.setHeader('Content-Length', String(SIZE));
      res.writeHead(200);
      await sendFileRegions(
        res,
        (async function* () {
          yield { fd: file.fd, start: 0, length: 1_000_000 };
          throw new Error('upstream connection lost');
        })(),
        mode,
      ).catch((e: Error) => {
        failure = e;
      });
    };
    const { body, complete } = await fetchBody(`${url}/`);
    await expectNoLeak(before);
    expect(complete).toBe(false);
    expect(body.equals(bytes.subarray(0, 1_000_000))).toBe(true);
    expect(failure?.message).toBe('upstream connection lost');
  });

});
