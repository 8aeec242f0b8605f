import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { getSystemErrorName } from 'node:util';
import type { FileRegion } from '../store/blob-store.js';

/** The native addon built from native/sendfile.c (see there for how it shares the socket with Node). */
interface SendfileAddon {
  supported: boolean;
  start(socketFd: number, fileFd: number, offset: number, length: number, done: (result: number, sent: number) => void, copy: boolean): object;
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

/** True when `res` can take its body through sendFileRegions(): the addon loaded, and `res` has its socket, a plain one. */
export function canSendfile(res: ServerResponse): boolean {
  // Never on TLS: the kernel would send the file's plain bytes past the encryption.
  if ((res.socket as { encrypted?: boolean } | null)?.encrypted) return false;
  return load().addon !== undefined && socketFd(res) !== undefined;
}

/** Whether a client at `address` is on this host (loopback). */
export function onThisHost(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return v4.startsWith('127.') || address === '::1';
}

/**
 * Whether `res` gets its body copied through a buffer rather than sendfile(2): only for a client
 * on this host, and only where the config asks (`blobs.copyToLocalClients`; see native/sendfile.c).
 */
export function copiesFor(res: ServerResponse, copyToLocalClients: boolean): boolean {
  return copyToLocalClients && onThisHost(res.socket?.remoteAddress);
}

/**
 * Sends the headers already set on `res`, then each region straight from the page cache into
 * the socket (copied through a buffer instead with `opts.copy`: see copiesFor()), and ends the
 * response. Regions may arrive slowly (a download in progress). Resolves when all are sent;
 * rejects, and destroys the connection so the client sees a short body, if they cannot be (a
 * region's source fails, the socket breaks, the client goes away). Each region's descriptor must
 * stay open until the next region is asked for.
 */
export async function sendFileRegions(
  res: ServerResponse,
  regions: Iterable<FileRegion> | AsyncIterable<FileRegion>,
  opts: { copy?: boolean } = {},
): Promise<void> {
  const { addon } = load();
  if (!addon) throw new Error('sendfile is not available');
  // A pipelined request's response waits for the one before it to finish before Node gives it
  // the socket; until then its body must go through Node (canSendfile() says no).
  if (!res.socket) throw new Error('the response has no socket yet (a pipelined request): check canSendfile() first');
  const copy = opts.copy ?? false;
  try {
    res.flushHeaders();
    // The body bypasses Node's stream, so the headers must have reached the kernel first.
    await new Promise<void>((resolve, reject) => {
      const socket = res.socket;
      if (!socket || socket.destroyed) return reject(new Error('the client went away'));
      socket.write('', (e) => (e ? reject(e) : resolve()));
    });
    for await (const region of regions) {
      // Looked up for each region: once Node closes the socket its descriptor may be reused.
      const fd = res.destroyed ? undefined : socketFd(res);
      if (fd === undefined) throw new Error('the client went away');
      await sendRegion(addon, res, fd, region, copy);
    }
    res.end();
  } catch (e) {
    res.destroy();
    throw e;
  }
}

function sendRegion(addon: SendfileAddon, res: ServerResponse, socket: number, region: FileRegion, copy: boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let running = true;
    const onClose = () => {
      // The connection is closing (client gone, shutdown): stop, so the socket can really close.
      if (running) addon.cancel(handle);
    };
    const handle = addon.start(socket, region.fd, region.start, region.length, (result, sent) => {
      running = false;
      res.off('close', onClose);
      if (result === 0) return resolve();
      reject(new Error(`sendfile stopped after ${sent} of ${region.length} bytes: ${getSystemErrorName(result)}`));
    }, copy);
    res.once('close', onClose);
  });
}
