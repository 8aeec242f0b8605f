import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { once } from 'node:events';
import { ReadStream } from 'node:fs';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { OciError } from '../oci/errors.js';
import { contentRange } from '../oci/range.js';
import type { BlobResult } from '../mirror/blobs.js';
import type { ManifestResult } from '../mirror/manifests.js';
import { canSendfile, sendFile } from './sendfile.js';

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
 * A blob response. Under the Node server a stored file goes out with sendfile(2) where the addon
 * is available; any other body is piped straight into the socket (no Web stream in between, and
 * a client that goes away stops the read at once). The status line waits
 * for the body's first bytes: a download that fails before any arrive still gets an OCI error.
 */
export async function blobResponse(
  outgoing: ServerResponse | undefined,
  b: BlobResult,
  extra: Record<string, string>,
  useSendfile = true,
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
  if (b.body && outgoing && useSendfile && b.body instanceof ReadStream && headers['Content-Length'] && canSendfile(outgoing)) {
    // A stored file: the kernel copies it into the socket (see sendfile.ts).
    const file = b.body;
    const fd = await opened(file);
    for (const [name, value] of Object.entries(headers)) outgoing.setHeader(name, value);
    outgoing.writeHead(status);
    sendFile(outgoing, fd, b.range?.start ?? 0, Number(headers['Content-Length']))
      .catch(() => {})
      .finally(() => file.destroy());
    return RESPONSE_ALREADY_SENT;
  }
  if (b.body && outgoing) {
    await firstBytes(b.body);
    // setHeader, not writeHead(status, headers): logging and metrics read the length back.
    for (const [name, value] of Object.entries(headers)) outgoing.setHeader(name, value);
    outgoing.writeHead(status);
    // Errors from here on are a broken client or a failed upstream mid-stream: the socket is
    // closed short of Content-Length, which is how a client learns the body is incomplete.
    pipeline(b.body, outgoing).catch(() => outgoing.destroy());
    return RESPONSE_ALREADY_SENT;
  }
  return new Response(b.body ? (Readable.toWeb(b.body) as ReadableStream) : null, { status, headers });
}

/** The descriptor of a file stream once it is open; rejects (nothing sent yet) if it cannot be opened. */
async function opened(file: ReadStream): Promise<number> {
  const fdOf = () => (file as unknown as { fd: number | null }).fd;
  if (typeof fdOf() !== 'number') {
    try {
      await once(file, 'ready');
    } catch (e) {
      file.destroy();
      throw e;
    }
  }
  return fdOf()!;
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
