// A listening "trap": a TCP server on a loopback port that no configuration names. Anything that
// connects to it is an outbound connection the mirror should never have made; tests assert that
// `connections` stays 0.
import { createServer, type AddressInfo, type Socket } from 'node:net';

export interface Trap {
  port: number;
  /** 127.0.0.1:PORT */
  host: string;
  /** Connections accepted so far. */
  connections: number;
  /** The first bytes each connection sent (up to 512), to tell what made it. */
  firstBytes: string[];
  stop(): Promise<void>;
}

export async function startTrap(): Promise<Trap> {
  const sockets = new Set<Socket>();
  const trap: Trap = {
    port: 0,
    host: '',
    connections: 0,
    firstBytes: [],
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = createServer((socket) => {
    trap.connections++;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.once('data', (d: Buffer) => {
      if (trap.firstBytes.length < 20) trap.firstBytes.push(d.subarray(0, 512).toString('latin1'));
    });
    socket.on('error', () => {});
    // Never answer: a client that got here hangs until it gives up, which the test also notices.
    setTimeout(() => socket.destroy(), 2000).unref();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  trap.port = (server.address() as AddressInfo).port;
  trap.host = `127.0.0.1:${trap.port}`;
  return trap;
}
