// Builds test images and pushes them straight over the registry HTTP API (no docker/skopeo),
// so tests know the exact bytes and digests an upstream serves.
import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { BasicAuth } from './registry.js';

export type Format = 'oci' | 'docker';

/** Credentials for the pusher. Works against htpasswd (Basic) and token-auth registries alike. */
export type RegistryAuth = BasicAuth;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface PushedChild {
  digest: string;
  mediaType: string;
  size: number;
  bytes: Buffer;
  platform?: Platform;
  /** For attestation manifests: the digest of the image manifest they describe. */
  attestationFor?: string;
  configDigest: string;
  layers: Array<{ digest: string; size: number }>;
}

export interface PushedIndex {
  repo: string;
  tag: string;
  digest: string;
  mediaType: string;
  bytes: Buffer;
  /** Manifests listed in the index (for a nested index: every leaf manifest of the inner indexes). */
  children: PushedChild[];
}

export interface PushedNestedIndex extends PushedIndex {
  /** The inner indexes listed in this index. */
  indexes: PushedIndex[];
}

export interface ImageOptions {
  format?: Format;
  layersPerImage?: number;
  /** Size in bytes of the random file inside each layer (default 1024). */
  layerSize?: number;
  /** Layers as raw random bytes instead of gzipped tar (cannot be unpacked). */
  rawLayers?: boolean;
  auth?: RegistryAuth;
}

export interface MultiPlatformOptions extends ImageOptions {
  /** `os/arch[/variant]` strings; default SEVEN_PLATFORMS. */
  platforms?: string[];
  /** Add a buildx-style attestation manifest per platform. */
  attestations?: boolean;
  /** Write the index JSON by hand with escaped slashes, odd key order and whitespace. */
  oddBytes?: boolean;
}

export const SEVEN_PLATFORMS: string[] = [
  'linux/amd64',
  'linux/arm64/v8',
  'linux/arm/v7',
  'linux/arm/v6',
  'linux/386',
  'linux/ppc64le',
  'linux/s390x',
];

export const MEDIA_TYPES = {
  oci: {
    index: 'application/vnd.oci.image.index.v1+json',
    manifest: 'application/vnd.oci.image.manifest.v1+json',
    config: 'application/vnd.oci.image.config.v1+json',
    layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  },
  docker: {
    index: 'application/vnd.docker.distribution.manifest.list.v2+json',
    manifest: 'application/vnd.docker.distribution.manifest.v2+json',
    config: 'application/vnd.docker.container.image.v1+json',
    layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  },
} as const;

export const IN_TOTO_MEDIA_TYPE = 'application/vnd.in-toto+json';

/** Every manifest type, for Accept headers (distribution 2.8 serves an index only if asked for it). */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.oci.index,
  MEDIA_TYPES.oci.manifest,
  MEDIA_TYPES.docker.index,
  MEDIA_TYPES.docker.manifest,
].join(', ');

export function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export function parsePlatform(spec: string): Platform {
  const [os, architecture, variant] = spec.split('/');
  if (!os || !architecture) throw new Error(`bad platform "${spec}", want os/arch[/variant]`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

// ---------------------------------------------------------------------------------------------
// HTTP with auth: on a 401 the challenge decides between Basic and the Bearer token flow.

const authHeaders = new Map<string, string>(); // `${registryUrl} ${repo}` -> Authorization

async function registryFetch(
  registryUrl: string,
  repo: string,
  url: string,
  init: { method: string; headers?: Record<string, string>; body?: Buffer },
  auth?: RegistryAuth,
): Promise<Response> {
  const key = `${registryUrl} ${repo}`;
  const send = (authorization?: string): Promise<Response> =>
    fetch(url, {
      method: init.method,
      headers: { ...init.headers, ...(authorization ? { authorization } : {}) },
      body: init.body ? new Uint8Array(init.body) : undefined, // fetch's BodyInit typing rejects Buffer
      redirect: 'follow',
    });
  const first = await send(authHeaders.get(key));
  if (first.status !== 401) return first;
  await first.arrayBuffer();
  const authorization = await answerChallenge(first.headers.get('www-authenticate') ?? '', repo, auth);
  authHeaders.set(key, authorization);
  return send(authorization);
}

async function answerChallenge(challenge: string, repo: string, auth?: RegistryAuth): Promise<string> {
  if (/^basic\b/i.test(challenge)) {
    if (!auth) throw new Error('registry wants Basic credentials but no auth was given');
    return `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
  }
  if (!/^bearer\b/i.test(challenge)) throw new Error(`unsupported auth challenge "${challenge}"`);
  const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
  if (!params.realm) throw new Error(`bearer challenge without realm: "${challenge}"`);
  const tokenUrl = new URL(params.realm);
  if (params.service) tokenUrl.searchParams.set('service', params.service);
  // Ask for push too: the pusher needs it, and a pull-only user still gets its pull grant.
  tokenUrl.searchParams.set('scope', `repository:${repo}:pull,push`);
  const headers: Record<string, string> = {};
  if (auth) headers.authorization = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
  const res = await fetch(tokenUrl, { headers });
  if (!res.ok) throw new Error(`token request ${tokenUrl} failed: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { token?: string; access_token?: string };
  const token = body.token ?? body.access_token;
  if (!token) throw new Error('token response without token');
  return `Bearer ${token}`;
}

async function expectStatus(res: Response, wanted: number, what: string): Promise<void> {
  if (res.status !== wanted) {
    throw new Error(`${what}: expected ${wanted}, got ${res.status} ${await res.text()}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Low-level push and fetch

/** Monolithic upload: POST an upload session, then PUT the whole blob with ?digest=. */
export async function pushBlob(registryUrl: string, repo: string, bytes: Buffer, auth?: RegistryAuth): Promise<string> {
  const digest = sha256(bytes);
  const start = await registryFetch(registryUrl, repo, `${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST' }, auth);
  await expectStatus(start, 202, `POST upload for ${repo}`);
  await start.arrayBuffer();
  const location = start.headers.get('location');
  if (!location) throw new Error('upload POST returned no Location');
  const uploadUrl = new URL(location, registryUrl);
  uploadUrl.searchParams.set('digest', digest);
  const put = await registryFetch(
    registryUrl,
    repo,
    uploadUrl.toString(),
    { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: bytes },
    auth,
  );
  await expectStatus(put, 201, `PUT blob ${digest} to ${repo}`);
  await put.arrayBuffer();
  return digest;
}

/** PUT a manifest by tag or digest; checks the registry's Docker-Content-Digest against the bytes. */
export async function putManifest(
  registryUrl: string,
  repo: string,
  ref: string,
  bytes: Buffer,
  mediaType: string,
  auth?: RegistryAuth,
): Promise<string> {
  const digest = sha256(bytes);
  const res = await registryFetch(
    registryUrl,
    repo,
    `${registryUrl}/v2/${repo}/manifests/${ref}`,
    { method: 'PUT', headers: { 'content-type': mediaType }, body: bytes },
    auth,
  );
  await expectStatus(res, 201, `PUT manifest ${repo}:${ref}`);
  await res.arrayBuffer();
  const returned = res.headers.get('docker-content-digest');
  if (returned !== digest) throw new Error(`registry stored ${repo}:${ref} as ${returned}, expected ${digest}`);
  return digest;
}

export interface FetchedManifest {
  bytes: Buffer;
  digest: string;
  mediaType: string;
  /** Docker-Content-Digest header */
  headerDigest: string | null;
}

/** GET a manifest with an Accept header covering every type. */
export async function fetchManifest(registryUrl: string, repo: string, ref: string, auth?: RegistryAuth): Promise<FetchedManifest> {
  const res = await registryFetch(
    registryUrl,
    repo,
    `${registryUrl}/v2/${repo}/manifests/${ref}`,
    { method: 'GET', headers: { accept: MANIFEST_ACCEPT } },
    auth,
  );
  await expectStatus(res, 200, `GET manifest ${repo}:${ref}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  return {
    bytes,
    digest: sha256(bytes),
    mediaType: res.headers.get('content-type') ?? '',
    headerDigest: res.headers.get('docker-content-digest'),
  };
}

export async function fetchBlob(registryUrl: string, repo: string, digest: string, auth?: RegistryAuth): Promise<Buffer> {
  const res = await registryFetch(registryUrl, repo, `${registryUrl}/v2/${repo}/blobs/${digest}`, { method: 'GET' }, auth);
  await expectStatus(res, 200, `GET blob ${repo}@${digest}`);
  return Buffer.from(await res.arrayBuffer());
}

// ---------------------------------------------------------------------------------------------
// Image content

/** A one-file ustar archive (enough for containerd to unpack). */
export function tarWithOneFile(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  const field = (offset: number, length: number, value: string): void => {
    header.write(value, offset, length, 'ascii');
  };
  const octal = (n: number, length: number): string => n.toString(8).padStart(length - 1, '0');
  field(0, 100, name);
  field(100, 8, octal(0o644, 8));
  field(108, 8, octal(0, 8));
  field(116, 8, octal(0, 8));
  field(124, 12, octal(content.length, 12));
  field(136, 12, octal(0, 12));
  field(148, 8, '        '); // checksum is computed with this field as spaces
  field(156, 1, '0');
  field(257, 6, 'ustar\0');
  field(263, 2, '00');
  let sum = 0;
  for (const byte of header) sum += byte;
  field(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  const padding = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([header, content, padding, Buffer.alloc(1024)]);
}

interface Layer {
  compressed: Buffer;
  diffId: string;
}

function makeLayer(size: number, raw: boolean): Layer {
  const content = randomBytes(size);
  if (raw) return { compressed: content, diffId: sha256(content) };
  const tar = tarWithOneFile(`random-${content.subarray(0, 6).toString('hex')}.bin`, content);
  return { compressed: gzipSync(tar), diffId: sha256(tar) };
}

function descriptor(mediaType: string, bytes: Buffer): { mediaType: string; digest: string; size: number } {
  return { mediaType, digest: sha256(bytes), size: bytes.length };
}

/** Pushes config + layers + image manifest (by digest). */
async function pushImageManifest(
  registryUrl: string,
  repo: string,
  platform: Platform,
  opts: ImageOptions,
): Promise<PushedChild> {
  const types = MEDIA_TYPES[opts.format ?? 'oci'];
  const layers = Array.from({ length: opts.layersPerImage ?? 1 }, () => makeLayer(opts.layerSize ?? 1024, opts.rawLayers ?? false));
  const config = Buffer.from(
    JSON.stringify({
      created: new Date().toISOString(),
      ...platform,
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map(() => ({ created_by: 'sparse-mirror test fixture' })),
    }),
  );
  await Promise.all([config, ...layers.map((l) => l.compressed)].map((b) => pushBlob(registryUrl, repo, b, opts.auth)));
  const layerDescriptors = layers.map((l) => descriptor(types.layer, l.compressed));
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: types.manifest,
      config: descriptor(types.config, config),
      layers: layerDescriptors,
    }),
  );
  const digest = await putManifest(registryUrl, repo, sha256(bytes), bytes, types.manifest, opts.auth);
  return {
    digest,
    mediaType: types.manifest,
    size: bytes.length,
    bytes,
    platform,
    configDigest: sha256(config),
    layers: layerDescriptors.map(({ digest, size }) => ({ digest, size })),
  };
}

/** A buildx-style attestation manifest (always OCI media types, like buildx) for `subject`. */
async function pushAttestation(registryUrl: string, repo: string, subject: PushedChild, auth?: RegistryAuth): Promise<PushedChild> {
  const statement = Buffer.from(
    JSON.stringify({
      _type: 'https://in-toto.io/Statement/v0.1',
      predicateType: 'https://slsa.dev/provenance/v0.2',
      subject: [{ name: `pkg:docker/${repo}`, digest: { sha256: subject.digest.slice('sha256:'.length) } }],
      predicate: { builder: { id: 'sparse-mirror-test' }, nonce: randomBytes(8).toString('hex') },
    }),
  );
  const config = Buffer.from(
    JSON.stringify({ architecture: 'unknown', os: 'unknown', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(statement)] } }),
  );
  await Promise.all([pushBlob(registryUrl, repo, config, auth), pushBlob(registryUrl, repo, statement, auth)]);
  const layer = {
    ...descriptor(IN_TOTO_MEDIA_TYPE, statement),
    annotations: { 'in-toto.io/predicate-type': 'https://slsa.dev/provenance/v0.2' },
  };
  const mediaType = MEDIA_TYPES.oci.manifest;
  const bytes = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType, config: descriptor(MEDIA_TYPES.oci.config, config), layers: [layer] }),
  );
  const digest = await putManifest(registryUrl, repo, sha256(bytes), bytes, mediaType, auth);
  return {
    digest,
    mediaType,
    size: bytes.length,
    bytes,
    platform: { os: 'unknown', architecture: 'unknown' },
    attestationFor: subject.digest,
    configDigest: sha256(config),
    layers: [{ digest: layer.digest, size: layer.size }],
  };
}

interface IndexEntry {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
}

function entryFor(child: PushedChild): IndexEntry {
  const entry: IndexEntry = { mediaType: child.mediaType, digest: child.digest, size: child.size };
  if (child.platform) entry.platform = child.platform;
  if (child.attestationFor) {
    entry.annotations = {
      'vnd.docker.reference.digest': child.attestationFor,
      'vnd.docker.reference.type': 'attestation-manifest',
    };
  }
  return entry;
}

function canonicalIndex(mediaType: string, entries: IndexEntry[]): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, manifests: entries }));
}

/**
 * The index JSON written by hand so any JSON re-serialiser changes it: escaped slashes,
 * `manifests` before `schemaVersion`, `size` before `digest`, tabs, CRLF, spaces before colons,
 * no trailing newline. Distribution 2.8 stores and serves these bytes unchanged.
 */
export function oddIndexJson(mediaType: string, entries: IndexEntry[]): Buffer {
  const str = (s: string): string => JSON.stringify(s).replaceAll('/', '\\/');
  const platform = (p: Platform): string =>
    `{"architecture" : ${str(p.architecture)},"os":${str(p.os)}${p.variant ? `,\t"variant":${str(p.variant)}` : ''}}`;
  const annotations = (a: Record<string, string>): string =>
    `{ ${Object.entries(a).map(([k, v]) => `${str(k)}: ${str(v)}`).join(' ,\r\n\t\t\t')} }`;
  const entry = (e: IndexEntry): string =>
    `\t\t{\r\n\t\t\t"size" :${e.size},\t"digest":  ${str(e.digest)},\r\n\t\t\t"mediaType":${str(e.mediaType)}` +
    (e.platform ? `,\r\n\t\t\t"platform" : ${platform(e.platform)}` : '') +
    (e.annotations ? `,\r\n\t\t\t"annotations":${annotations(e.annotations)}` : '') +
    '\r\n\t\t}';
  return Buffer.from(
    `{\r\n\t"manifests" : [\r\n${entries.map(entry).join(' ,\r\n')}\r\n\t],\r\n` +
      `\t"schemaVersion"  :\t2,\r\n\t"mediaType" : ${str(mediaType)}\r\n}`,
  );
}

// ---------------------------------------------------------------------------------------------
// High-level fixtures

/**
 * Pushes one image per platform (plus attestations if asked), then the index under `tag`.
 * Children are pushed first: distribution 2.8 rejects an index whose children it lacks.
 */
export async function pushMultiPlatformImage(
  registryUrl: string,
  repo: string,
  tag: string,
  opts: MultiPlatformOptions = {},
): Promise<PushedIndex> {
  const format = opts.format ?? 'oci';
  const images = await Promise.all(
    (opts.platforms ?? SEVEN_PLATFORMS).map((p) => pushImageManifest(registryUrl, repo, parsePlatform(p), opts)),
  );
  const attestations = opts.attestations
    ? await Promise.all(images.map((image) => pushAttestation(registryUrl, repo, image, opts.auth)))
    : [];
  const children = [...images, ...attestations];
  const mediaType = MEDIA_TYPES[format].index;
  const entries = children.map(entryFor);
  const bytes = opts.oddBytes ? oddIndexJson(mediaType, entries) : canonicalIndex(mediaType, entries);
  const digest = await putManifest(registryUrl, repo, tag, bytes, mediaType, opts.auth);
  return { repo, tag, digest, mediaType, bytes, children };
}

/** One image manifest tagged `tag` (default platform linux/amd64). */
export async function pushSinglePlatformImage(
  registryUrl: string,
  repo: string,
  tag: string,
  opts: ImageOptions & { platform?: string } = {},
): Promise<PushedChild & { repo: string; tag: string }> {
  const child = await pushImageManifest(registryUrl, repo, parsePlatform(opts.platform ?? 'linux/amd64'), opts);
  await putManifest(registryUrl, repo, tag, child.bytes, child.mediaType, opts.auth);
  return { ...child, repo, tag };
}

/**
 * An index listing other indexes (which must already be in `repo`), optionally followed by
 * extra image manifests. `children` flattens the leaf manifests; `indexes` holds the inner ones.
 */
export async function pushNestedIndex(
  registryUrl: string,
  repo: string,
  tag: string,
  inner: PushedIndex[],
  opts: { format?: Format; extraChildren?: PushedChild[]; auth?: RegistryAuth } = {},
): Promise<PushedNestedIndex> {
  const foreign = inner.find((i) => i.repo !== repo);
  if (foreign) throw new Error(`pushNestedIndex: inner index ${foreign.repo}:${foreign.tag} is not in ${repo}`);
  const mediaType = MEDIA_TYPES[opts.format ?? 'oci'].index;
  const extra = opts.extraChildren ?? [];
  const entries: IndexEntry[] = [
    ...inner.map((i) => ({ mediaType: i.mediaType, digest: i.digest, size: i.bytes.length })),
    ...extra.map(entryFor),
  ];
  const bytes = canonicalIndex(mediaType, entries);
  const digest = await putManifest(registryUrl, repo, tag, bytes, mediaType, opts.auth);
  return { repo, tag, digest, mediaType, bytes, children: [...inner.flatMap((i) => i.children), ...extra], indexes: inner };
}
