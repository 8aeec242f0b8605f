import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions as HttpsOptions } from 'node:https';
import type { Hono } from 'hono';

export interface RunningServer {
  url: string;
  port: number;
  server: Server;
  close(): Promise<void>;
}

/** Serves `app` on host:port; HTTPS (HTTP/1.1) when `tls` is given. */
export function listen(app: Hono<any>, host: string, port: number, tls?: HttpsOptions): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    const options = tls
      ? { fetch: app.fetch, hostname: host, port, createServer: createHttpsServer, serverOptions: tls }
      : { fetch: app.fetch, hostname: host, port };
    const server = serve(options, (info: AddressInfo) => {
      const shownHost = info.family === 'IPv6' ? `[${info.address}]` : info.address;
      resolve({
        url: `${tls ? 'https' : 'http'}://${shownHost}:${info.port}`,
        port: info.port,
        server,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeIdleConnections();
          }),
      });
    }) as Server;
    server.once('error', reject);
    // Slow or stalled clients must not hold sockets forever.
    server.headersTimeout = 30_000;
    server.requestTimeout = 0; // a large blob download may legitimately take long
    server.keepAliveTimeout = 10_000;
  });
}
