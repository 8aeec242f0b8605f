import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { getSystemErrorName } from 'node:util';

/** The native addon built from native/sendfile.c (see there for how it shares the socket with Node). */
interface SendfileAddon {
  supported: boolean;
  start(socketFd: number, fileFd: number, offset: number, length: number, done: (result: number, sent: number) => void): object;
  cancel(handle: object): void;
}

export type SendfileStatus = { available: true } | { available: false; reason: string };

const ADDON_PATH = join('build', 'Release', 'sendfile.node');

let loaded: { addon?: SendfileAddon; status: SendfileStatus } | undefined;

/** Whether blobs can go out with sendfile(2) here, and if not, why (logged at start-up). */
export function sendfileStatus(): SendfileStatus {
  return load().status;
}

function load(): { addon?: SendfileAddon; status: SendfileStatus } {
  if (loaded) return loaded;
  const path = findUp(import.meta.dirname, ADDON_PATH);
  if (!path) return (loaded = { status: { available: false, reason: `${ADDON_PATH} was not built (npm ci builds it with node-gyp)` } });
  try {
    const addon = createRequire(import.meta.url)(path) as SendfileAddon;
    if (!addon.supported) return (loaded = { status: { available: false, reason: `no sendfile(2) on ${process.platform}` } });
    return (loaded = { addon, status: { available: true } });
  } catch (e) {
    return (loaded = { status: { available: false, reason: `${path} does not load: ${(e as Error).message}` } });
  }
}

/** The addon's file, looked for in this module's folder and its parents (src/http in tests, dist/src/http when built). */
function findUp(from: string, relative: string): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, relative);
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
}

/** The socket's descriptor, where Node exposes one (a plain TCP connection on a Unix system). */
function socketFd(res: ServerResponse): number | undefined {
  const fd = (res.socket as unknown as { _handle?: { fd?: unknown } } | null)?._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** True when `res` can take its body through sendFile(): the addon loaded and the socket is a plain one. */
export function canSendfile(res: ServerResponse): boolean {
  return load().addon !== undefined && socketFd(res) !== undefined;
}

/**
 * Sends the headers already set on `res`, then `length` bytes of `fileFd` from `offset` straight
 * from the page cache into the socket, and ends the response. Resolves when the body is sent;
 * rejects (and destroys the connection, so the client sees a short body) if it could not be.
 * The caller keeps `fileFd` open until this settles.
 */
export async function sendFile(res: ServerResponse, fileFd: number, offset: number, length: number): Promise<void> {
  const { addon } = load();
  if (!addon) throw new Error('sendfile is not available');
  res.flushHeaders();
  const socket = res.socket;
  // The body bypasses Node's stream, so the headers must have reached the kernel first.
  await new Promise<void>((resolve, reject) => {
    if (!socket || socket.destroyed) return reject(new Error('the client went away'));
    socket.write('', (e) => (e ? reject(e) : resolve()));
  });
  const fd = socketFd(res);
  if (fd === undefined || res.destroyed) throw new Error('the client went away');
  await new Promise<void>((resolve, reject) => {
    let running = true;
    const onClose = () => {
      // The connection is closing (client gone, shutdown): stop, so the socket can really close.
      if (running) addon.cancel(handle);
    };
    const handle = addon.start(fd, fileFd, offset, length, (result, sent) => {
      running = false;
      res.off('close', onClose);
      if (result === 0) {
        res.end();
        resolve();
        return;
      }
      const error = new Error(`sendfile stopped after ${sent} of ${length} bytes: ${getSystemErrorName(result)}`);
      res.destroy(error);
      reject(error);
    });
    res.once('close', onClose);
  });
}
