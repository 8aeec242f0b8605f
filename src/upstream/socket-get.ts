import { connect as connectTcp, isIP, type Socket } from 'node:net';
import { connect as connectTls, type ConnectionOptions } from 'node:tls';
import type { LentBody, LentSink } from './lent-body.js';

/**
 * A GET whose body is read straight off the socket into one buffer per connection (LentBody):
 * what a blob download needs and no more. undici spends ~0.9 s of CPU per GiB of body on
 * loopback (a new buffer per read, a copy into llhttp's memory, a stream); this ~0.2 s. Only a
 * body framed by Content-Length, with no content coding, is read here; for any other answer the
 * caller gets the status and headers, and asks again the usual way.
 */

/** The most one read takes: a socket hands over what it has, up to this. */
const READ_BUFFER = 256 * 1024;
const MAX_HEAD = 64 * 1024;
/** Connections kept between requests, per origin, and for how long (registries keep theirs a minute or more). */
const MAX_IDLE = 8;
const IDLE_MS = 4000;

export interface SocketGetOptions {
  headers: Record<string, string>;
  /** For https: trust and identity, as the upstream's undici agent has them. */
  tls: ConnectionOptions;
  connectMs: number;
  headersMs: number;
  bodyIdleMs: number;
}

export type SocketGetResult =
  | { kind: 'body'; status: number; headers: Record<string, string>; length: number; body: LentBody }
  /** Any other answer: its body is not read, and its connection is closed. */
  | { kind: 'other'; status: number; headers: Record<string, string> };

export class ClosedBeforeAnswerError extends Error {}

export async function socketGet(url: URL, opts: SocketGetOptions, kept: KeptConnections): Promise<SocketGetResult> {
  const request = requestText(url, opts.headers);
  const reused = kept.take(url.origin);
  if (reused) {
    try {
      return await exchange(reused, request, opts, opts.headersMs);
    } catch (e) {
      // The server closed a kept connection while it was idle: once more on a new one.
      if (!(e instanceof ClosedBeforeAnswerError)) throw e;
    }
  }
  return exchange(new Connection(url, opts.tls, kept), request, opts, opts.connectMs + opts.headersMs);
}

function requestText(url: URL, headers: Record<string, string>): string {
  let text = `GET ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\naccept-encoding: identity\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    // A token from a token server ends up here: no line breaks may smuggle in another header.
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || /[\r\n\0]/.test(value)) throw new Error(`invalid request header ${name}`);
    text += `${name}: ${value}\r\n`;
  }
  return `${text}\r\n`;
}

/** Sends the request and reads the answer's head; the body waits, unread, for its start(). */
function exchange(conn: Connection, request: string, opts: SocketGetOptions, headTimeoutMs: number): Promise<SocketGetResult> {
  return new Promise<SocketGetResult>((resolve, reject) => {
    let head = Buffer.alloc(0);
    conn.setTimeout(headTimeoutMs);
    conn.watch({
      bytes: (buffer, n) => {
        head = Buffer.concat([head, buffer.subarray(0, n)]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) {
          if (head.length <= MAX_HEAD) return true;
          conn.destroy(new Error(`upstream's response head is over ${MAX_HEAD} bytes`));
          return false;
        }
        const parsed = parseHead(head.subarray(0, end).toString('latin1'));
        if (!parsed) {
          conn.destroy(new Error('upstream sent a malformed HTTP response'));
          return false;
        }
        const { status, headers, keepAlive } = parsed;
        const length = bodyLength(status, headers);
        if (length === undefined) {
          conn.watch(undefined);
          conn.destroy();
          resolve({ kind: 'other', status, headers });
          return false;
        }
        // The body's first bytes came with the head: copied, since the buffer is read into again.
        const body = new SocketBody(conn, length, Buffer.from(head.subarray(end + 4)), keepAlive, opts.bodyIdleMs);
        resolve({ kind: 'body', status, headers, length, body });
        return false;
      },
      failed: (e) => reject(head.length === 0 && !(e instanceof TimeoutError) ? new ClosedBeforeAnswerError(e.message) : e),
    });
    conn.socket.write(request);
    conn.resume(); // a kept connection stopped reading when its last body ended
  });
}

/** The body's length when it is one this module reads: 200 or 206, Content-Length framed, not encoded. */
function bodyLength(status: number, headers: Record<string, string>): number | undefined {
  if (status !== 200 && status !== 206) return undefined;
  if (headers['transfer-encoding'] !== undefined) return undefined;
  const coding = headers['content-encoding'];
  if (coding !== undefined && coding.toLowerCase() !== 'identity') return undefined;
  const length = headers['content-length'];
  return length !== undefined && /^\d{1,15}$/.test(length) ? Number(length) : undefined;
}

function parseHead(text: string): { status: number; headers: Record<string, string>; keepAlive: boolean } | undefined {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(lines[0] ?? '');
  if (!m) return undefined;
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    // No folded or nameless lines: a head we cannot read for sure is not read at all.
    if (colon <= 0 || /^[ \t]/.test(line)) return undefined;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const before = headers[name];
    if (before !== undefined && name === 'content-length' && before !== value) return undefined;
    headers[name] ??= value;
  }
  const connection = (headers.connection ?? '').toLowerCase();
  const keepAlive = m[1] === '1' ? !connection.includes('close') : connection.includes('keep-alive');
  return { status: Number(m[2]), headers, keepAlive };
}

class TimeoutError extends Error {}

interface Watcher {
  /** `n` bytes are in `buffer`; false stops reading until resumed. */
  bytes(buffer: Buffer, n: number): boolean;
  failed(e: Error): void;
}

/** One connection, its read buffer, and whoever reads from it now (a response, or nobody while idle). */
class Connection {
  readonly origin: string;
  readonly socket: Socket;
  private readonly buffer = Buffer.allocUnsafe(READ_BUFFER);
  private watcher: Watcher | undefined;
  private failure: Error | undefined;
  private timeoutMs = 0;

  constructor(url: URL, tls: ConnectionOptions, private readonly kept: KeptConnections) {
    this.origin = url.origin;
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const onread = { buffer: this.buffer, callback: (n: number) => this.onRead(n) };
    // TLS sockets take `onread` too (Node 15.1+; @types/node leaves it out of ConnectionOptions).
    const secure = { ...tls, host, port: Number(url.port) || 443, servername: isIP(host) ? undefined : host, ALPNProtocols: ['http/1.1'], onread };
    this.socket = url.protocol === 'https:' ? connectTls(secure as ConnectionOptions) : connectTcp({ host, port: Number(url.port) || 80, noDelay: true, onread });
    this.socket.on('error', (e) => this.fail(e));
    this.socket.on('close', () => this.fail(new Error('upstream closed the connection')));
    this.socket.on('timeout', () => this.socket.destroy(this.watcher ? new TimeoutError(`upstream sent nothing for ${this.timeoutMs} ms`) : undefined));
  }

  watch(watcher: Watcher | undefined): void {
    this.watcher = watcher;
    if (watcher && this.failure) watcher.failed(this.failure);
  }

  setTimeout(ms: number): void {
    this.timeoutMs = ms;
    this.socket.setTimeout(ms);
  }

  resume(): void {
    this.socket.resume();
  }

  destroy(e?: Error): void {
    this.socket.destroy(e);
  }

  /** Kept for the next request to this origin, or closed. */
  release(reusable: boolean): void {
    this.watcher = undefined;
    if (!reusable || this.failure || !this.kept.put(this)) return this.destroy();
    this.setTimeout(IDLE_MS);
  }

  get usable(): boolean {
    return !this.failure && !this.socket.destroyed;
  }

  private onRead(n: number): boolean {
    // Bytes nobody asked for (on an idle connection): the connection is out of step; drop it.
    if (!this.watcher) {
      this.destroy();
      return false;
    }
    return this.watcher.bytes(this.buffer, n);
  }

  private fail(e: Error): void {
    this.failure ??= e;
    this.kept.remove(this);
    const watcher = this.watcher;
    this.watcher = undefined;
    watcher?.failed(this.failure);
  }
}

class SocketBody implements LentBody {
  readonly lent = true;
  private sink: LentSink | undefined;
  private remaining: number;
  private done = false;
  /** The last piece is still lent out: the connection is handed on once it comes back. */
  private releaseOnResume = false;

  constructor(
    private readonly conn: Connection,
    length: number,
    private first: Buffer,
    private reusable: boolean,
    private readonly bodyIdleMs: number,
  ) {
    this.remaining = length;
    // Until start(), a failure waits in the connection; a body nobody starts is destroyed.
    conn.watch(undefined);
  }

  start(sink: LentSink): void {
    if (this.sink) throw new Error('a body is read once');
    this.sink = sink;
    this.conn.setTimeout(this.bodyIdleMs);
    // What came with the head first: a body that came whole with it is complete, even if the
    // server has closed the connection since.
    const first = this.first;
    this.first = Buffer.alloc(0);
    const more = first.length > 0 || this.remaining === 0 ? this.deliver(first) : true;
    if (this.done) return;
    this.conn.watch({ bytes: (buffer, n) => this.deliver(buffer.subarray(0, n)), failed: (e) => this.fail(e) });
    if (more && !this.done) this.conn.resume();
  }

  resume(): void {
    if (this.releaseOnResume) {
      this.releaseOnResume = false;
      this.conn.release(this.reusable);
    } else if (!this.done) {
      this.conn.resume();
    }
  }

  destroy(e?: Error): void {
    if (this.done) return;
    this.done = true;
    this.conn.watch(undefined);
    this.conn.destroy();
    if (e) this.sink?.error(e);
  }

  private deliver(piece: Buffer): boolean {
    if (this.done) return false;
    if (piece.length > this.remaining) {
      this.reusable = false; // more than it declared: the connection is out of step
      piece = piece.subarray(0, this.remaining);
    }
    this.remaining -= piece.length;
    const more = piece.length === 0 || this.sink!.data(piece);
    if (this.remaining > 0) return more;
    this.done = true;
    if (more) this.conn.release(this.reusable);
    else this.releaseOnResume = true;
    this.sink!.end();
    return false;
  }

  private fail(e: Error): void {
    if (this.done) return;
    this.done = true;
    this.conn.destroy();
    this.sink?.error(e);
  }
}

/**
 * Connections kept between requests, by origin, newest last. One per upstream client: a
 * connection carries the TLS settings it was made with, and must not serve another client's.
 */
export class KeptConnections {
  private readonly byOrigin = new Map<string, Connection[]>();

  take(origin: string): Connection | undefined {
    const list = this.byOrigin.get(origin);
    for (let conn = list?.pop(); conn; conn = list?.pop()) if (conn.usable) return conn;
    return undefined;
  }

  put(conn: Connection): boolean {
    const list = this.byOrigin.get(conn.origin) ?? [];
    if (list.length >= MAX_IDLE) return false;
    list.push(conn);
    this.byOrigin.set(conn.origin, list);
    return true;
  }

  remove(conn: Connection): void {
    const list = this.byOrigin.get(conn.origin);
    const i = list?.indexOf(conn) ?? -1;
    if (i >= 0) list!.splice(i, 1);
    if (list && list.length === 0) this.byOrigin.delete(conn.origin);
  }

  /** Closes them all (the client is closing). */
  close(): void {
    for (const list of this.byOrigin.values()) for (const conn of list.splice(0)) conn.destroy();
    this.byOrigin.clear();
  }
}
