import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { once } from 'node:events';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { OciError } from '../oci/errors.js';
import { contentRange } from '../oci/range.js';
import type { BlobResult } from '../mirror/blobs.js';
import type { ManifestResult } from '../mirror/manifests.js';
import type { MirrorConfig } from '../config/schema.js';
import { canSendfile, copiesFor, sendFileRegions } from './sendfile.js';

export const API_VERSION_HEADER = { 'Docker-Distribution-API-Version': 'registry/2.0' };

export function errorResponse(e: OciError): Response {
  return jsonResponse(e.body(), e.status, e.headers);
}

/** A JSON response with its Content-Length set (the request log reads it). */
export function jsonResponse(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  const text = JSON.stringify(body);
  return new Response(text, {
    status,
    headers: { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(text)), ...API_VERSION_HEADER, ...headers },
  });
}

export function manifestResponse(m: ManifestResult, extra: Record<string, string>, ifNoneMatch?: string): Response {
  const etag = `"${m.digest}"`;
  const headers = {
    'Content-Type': m.mediaType,
    'Content-Length': String(m.size),
    'Docker-Content-Digest': m.digest,
    ETag: etag,
    ...API_VERSION_HEADER,
    ...extra,
  };
  if (ifNoneMatch && ifNoneMatch.split(',').some((t) => t.trim() === etag)) {
    return new Response(null, { status: 304, headers: { ETag: etag, 'Docker-Content-Digest': m.digest } });
  }
  return new Response(m.bytes ? new Uint8Array(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength) : null, { status: 200, headers });
}

/**
 * A blob response. Under the Node server its file regions (a stored file, or the temp file of a
 * download in progress) go out with sendfile(2) where the addon is available and `blobs.sendfile`
 * is on (copied through a buffer for a client on this host with `blobs.copyToLocalClients`);
 * otherwise the body is piped straight into the socket (no Web stream in between, and a client
 * that goes away stops the read at once). The status line waits for the body's first bytes: a
 * download that fails before any arrive still gets an OCI error.
 */
export async function blobResponse(
  outgoing: ServerResponse | undefined,
  b: BlobResult,
  extra: Record<string, string>,
  sending: Pick<MirrorConfig['blobs'], 'sendfile' | 'copyToLocalClients'>,
): Promise<Response> {
  const headers: Record<string, string> = {
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': b.digest,
    ETag: `"${b.digest}"`,
    ...API_VERSION_HEADER,
    ...extra,
  };
  let status = 200;
  if (b.size !== undefined) {
    headers['Accept-Ranges'] = 'bytes';
    if (b.range) {
      status = 206;
      headers['Content-Range'] = contentRange(b.range, b.size);
      headers['Content-Length'] = String(b.range.end - b.range.start + 1);
    } else {
      headers['Content-Length'] = String(b.size);
    }
  }
  if (b.body && b.regions && outgoing && sending.sendfile && headers['Content-Length'] && canSendfile(outgoing)) {
    // The kernel copies the file (stored, or the temp file of a download) into the socket.
    const body = b.body;
    const regions = b.regions()[Symbol.asyncIterator]();
    // As with a stream: the status line waits for the first part, so an early failure is an OCI error.
    const first = await regions.next().catch((e: unknown) => {
      body.destroy();
      throw e;
    });
    writeHead(outgoing, status, headers);
    sendFileRegions(outgoing, startingWith(first, regions), { copy: copiesFor(outgoing, sending.copyToLocalClients) })
      .catch(() => {})
      .finally(() => body.destroy());
    return RESPONSE_ALREADY_SENT;
  }
  if (b.body && outgoing) {
    await firstBytes(b.body);
    writeHead(outgoing, status, headers);
    // Errors from here on are a broken client or a failed upstream mid-stream: the socket is
    // closed short of Content-Length, which is how a client learns the body is incomplete.
    pipeline(b.body, outgoing).catch(() => outgoing.destroy());
    return RESPONSE_ALREADY_SENT;
  }
  return new Response(b.body ? (Readable.toWeb(b.body) as ReadableStream) : null, { status, headers });
}

/** setHeader, not writeHead(status, headers): logging and metrics read the length back. */
function writeHead(outgoing: ServerResponse, status: number, headers: Record<string, string>): void {
  for (const [name, value] of Object.entries(headers)) outgoing.setHeader(name, value);
  outgoing.writeHead(status);
}

/** An iterator's items, the first of which was already taken. */
async function* startingWith<T>(first: IteratorResult<T>, rest: AsyncIterator<T>): AsyncGenerator<T> {
  try {
    for (let item = first; !item.done; item = await rest.next()) yield item.value;
  } finally {
    await rest.return?.();
  }
}

/** Resolves once the stream has data buffered (or has ended); rejects with its error. */
async function firstBytes(body: Readable): Promise<void> {
  if (body.readableLength > 0 || body.readableEnded) return;
  try {
    await once(body, 'readable');
  } catch (e) {
    body.destroy();
    throw e;
  }
}

/** A referrers list (an OCI index), with `OCI-Filters-Applied` when it was filtered. */
export function referrersResponse(page: { body: Buffer; filtersApplied?: string }, wantBody: boolean, extra: Record<string, string>): Response {
  const headers: Record<string, string> = {
    'Content-Type': 'application/vnd.oci.image.index.v1+json',
    'Content-Length': String(page.body.length),
    ...API_VERSION_HEADER,
    ...extra,
  };
  if (page.filtersApplied) headers['OCI-Filters-Applied'] = page.filtersApplied;
  return new Response(wantBody ? new Uint8Array(page.body) : null, { status: 200, headers });
}
