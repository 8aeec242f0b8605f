// Plain-HTTP pushes into the mirror (the registry API by hand), for tests that need to see every
// status and header rather than a client's summary of them.
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';

export const PUSH_TOKEN = 'x'.repeat(32);
export const PULL_TOKEN = 'p'.repeat(32);

/** Auth config for startTestMirror: one push token, one pull-only token. */
export const PUSH_AUTH = {
  enabled: true,
  tokens: [
    { token: PUSH_TOKEN, role: 'push' as const },
    { token: PULL_TOKEN, role: 'pull' as const },
  ],
};

export function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export function bearer(token = PUSH_TOKEN): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

export interface Reply {
  status: number;
  headers: Headers;
  body: Buffer;
  /** Parsed OCI error body, when there is one. */
  errors?: Array<{ code: string; message: string; detail?: Record<string, unknown> }>;
}

/** One request to the mirror; the body is read and an error body parsed. */
export async function call(
  base: string,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: Uint8Array; token?: string | null } = {},
): Promise<Reply> {
  const url = path.startsWith('http') ? path : new URL(path, base).toString();
  const auth = opts.token === null ? {} : bearer(opts.token ?? PUSH_TOKEN);
  const res = await fetch(url, {
    method,
    headers: { ...auth, ...opts.headers },
    body: opts.body ? new Uint8Array(opts.body) : undefined,
    redirect: 'manual',
  });
  const body = Buffer.from(await res.arrayBuffer());
  let errors: Reply['errors'];
  if (res.status >= 400 && body.length > 0) {
    try {
      errors = (JSON.parse(body.toString('utf8')) as { errors?: Reply['errors'] }).errors;
    } catch {
      errors = undefined;
    }
  }
  return { status: res.status, headers: res.headers, body, errors };
}

/** POST + PUT ?digest= (monolithic). Returns the digest. */
export async function pushBlob(base: string, repo: string, bytes: Uint8Array, token = PUSH_TOKEN): Promise<string> {
  const digest = sha256(bytes);
  const start = await call(base, 'POST', `/v2/${repo}/blobs/uploads/`, { token });
  if (start.status !== 202) throw new Error(`POST upload: ${start.status} ${start.body.toString()}`);
  const location = new URL(start.headers.get('location')!, base);
  location.searchParams.set('digest', digest);
  const put = await call(base, 'PUT', location.toString(), { token, body: bytes, headers: { 'content-type': 'application/octet-stream' } });
  if (put.status !== 201) throw new Error(`PUT blob: ${put.status} ${put.body.toString()}`);
  return digest;
}

export async function putManifest(base: string, repo: string, ref: string, bytes: Uint8Array, mediaType: string, token = PUSH_TOKEN): Promise<Reply> {
  return call(base, 'PUT', `/v2/${repo}/manifests/${ref}`, { token, body: bytes, headers: { 'content-type': mediaType } });
}

export const OCI = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  empty: 'application/vnd.oci.empty.v1+json',
} as const;

export interface BuiltImage {
  digest: string;
  bytes: Buffer;
  size: number;
  config: Buffer;
  layers: Buffer[];
}

/** An image manifest (not pushed): a config naming the platform and some random "layers". */
export function buildImage(platform: { os: string; architecture: string; variant?: string }, layers: Buffer[]): BuiltImage {
  const config = Buffer.from(JSON.stringify({ ...platform, rootfs: { type: 'layers', diff_ids: layers.map(sha256) }, config: {} }));
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI.manifest,
      config: { mediaType: OCI.config, digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: OCI.layer, digest: sha256(l), size: l.length })),
    }),
  );
  return { digest: sha256(bytes), bytes, size: bytes.length, config, layers };
}

/** Pushes an image's blobs and then its manifest (by digest, or by `tag`). */
export async function pushImage(base: string, repo: string, image: BuiltImage, tag?: string): Promise<Reply> {
  for (const b of [image.config, ...image.layers]) await pushBlob(base, repo, b);
  return putManifest(base, repo, tag ?? image.digest, image.bytes, OCI.manifest);
}

/**
 * A PATCH whose connection is destroyed after `sendBytes` of the declared body have gone out.
 * Resolves once the socket is closed.
 */
export async function brokenPatch(
  url: string,
  headers: Record<string, string>,
  body: Buffer,
  sendBytes: number,
): Promise<void> {
  await new Promise<void>((resolve) => {
    const req = httpRequest(url, { method: 'PATCH', headers: { ...headers, 'content-length': String(body.length) } });
    req.on('error', () => {}); // the socket we destroy
    req.on('close', () => resolve());
    req.flushHeaders();
    req.write(body.subarray(0, sendBytes), () => {
      // Give the server time to read what was sent before the connection breaks.
      setTimeout(() => req.destroy(), 300);
    });
  });
}
