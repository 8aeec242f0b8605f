// A tiny reverse proxy in front of a real registry that records every request it forwards, so
// tests can assert exactly what the mirror fetched from upstream (method + path, nothing more).
// `down()` makes it refuse connections (an unreachable upstream); `up()` serves again on the same port.
import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Transform } from 'node:stream';

export interface ProxiedRequest {
  method: string;
  /** Path without query string. */
  path: string;
  /** Raw request target, including any query string. */
  url: string;
  headers: IncomingHttpHeaders;
  /** Status the upstream answered with (0 until it did, or when forwarding failed). */
  status: number;
}

export interface CountingProxy {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT */
  host: string;
  /** Every request received, in order. */
  requests: ProxiedRequest[];
  /**
   * Requests with this method ('*' for any) whose url (incl. query), as sent or percent-decoded,
   * contains `substring` (clients may send a digest's `:` as `%3A`).
   */
  count(method: string, substring: string): number;
  /** `METHOD /path` lines, for readable assertion failures. */
  lines(): string[];
  /** Clears the request log. */
  reset(): void;
  /** Stops listening and drops open connections: connects fail with ECONNREFUSED. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  stop(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

function decoded(url: string): string {
  try {
    return decodeURIComponent(url);
  } catch {
    return url;
  }
}

export interface CountingProxyOptions {
  /** Forward the client's Host header (S3's SigV4 signs it) instead of the target's. */
  preserveHost?: boolean;
  /** Send response bodies at most this fast, so that a test can act while a download is under way. */
  bytesPerSecond?: number;
}

export async function startCountingProxy(targetUrl: string, opts: CountingProxyOptions = {}): Promise<CountingProxy> {
  const target = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true });
  const requests: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();
  let listening = false;

  const forward = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/';
    const record: ProxiedRequest = { method: req.method ?? 'GET', path: url.split('?')[0] ?? '/', url, headers: req.headers, status: 0 };
    requests.push(record);
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (v !== undefined && !HOP_BY_HOP.has(k) && k !== 'host') headers[k] = v;
    }
    headers.host = opts.preserveHost && req.headers.host ? req.headers.host : target.host;
    const out = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: url, headers, agent },
      (upstream) => {
        record.status = upstream.statusCode ?? 0;
        const back: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(upstream.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) back[k] = v;
        res.writeHead(upstream.statusCode ?? 502, back);
        (opts.bytesPerSecond ? upstream.pipe(throttle(opts.bytesPerSecond)) : upstream).pipe(res);
        upstream.once('error', () => res.destroy());
      },
    );
    out.once('error', () => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end('counting proxy: upstream unreachable');
      } else {
        res.destroy();
      }
    });
    req.pipe(out);
  };

  const server = createServer(forward);
  server.keepAliveTimeout = 1000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  const listen = (port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        listening = true;
        resolve();
      });
    });
  const close = async (): Promise<void> => {
    if (!listening) return;
    listening = false;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sockets) s.destroy();
    await closed;
  };

  await listen(0);
  const port = (server.address() as AddressInfo).port;
  const host = `127.0.0.1:${port}`;
  return {
    url: `http://${host}`,
    host,
    requests,
    count: (method, substring) =>
      requests.filter((r) => (method === '*' || r.method === method) && (r.url.includes(substring) || decoded(r.url).includes(substring))).length,
    lines: () => requests.map((r) => `${r.method} ${r.url}`),
    reset: () => void (requests.length = 0),
    down: close,
    up: async () => {
      if (!listening) await listen(port);
    },
    stop: async () => {
      await close();
      agent.destroy();
    },
  };
}

/** Passes bytes on at `rate` per second at most, in slices of 64 KiB. */
function throttle(rate: number): Transform {
  const started = Date.now();
  let sent = 0;
  return new Transform({
    async transform(chunk: Buffer, _enc, done) {
      for (let i = 0; i < chunk.length; i += 65536) {
        const part = chunk.subarray(i, i + 65536);
        sent += part.length;
        const due = started + (sent / rate) * 1000 - Date.now();
        if (due > 0) await new Promise((r) => setTimeout(r, due));
        this.push(part);
      }
      done();
    },
  });
}
