// A fast synthetic upstream for the memory scenario: one single-platform image whose layers are
// `count` distinct blobs of `size` bytes, generated on the fly (nothing held in memory but one
// 1 MiB pattern). Blob i is the pattern repeated, then a last MiB that is the pattern with i and a
// per-run salt written into its first bytes, so its digest costs one hash of `size` bytes plus
// 1 MiB per blob (the SHA-256 state after the common prefix is copied).
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

const MIB = 1024 * 1024;

export interface SynthUpstream {
  url: string;
  host: string;
  repo: string;
  tag: string;
  blobs: Array<{ digest: string; size: number }>;
  /** GETs of each blob digest (and HEADs), as received. */
  gets: Map<string, number>;
  heads: Map<string, number>;
  stop(): Promise<void>;
}

export async function startSynthUpstream(opts: { count: number; size: number; repo?: string; tag?: string }): Promise<SynthUpstream> {
  if (opts.size % MIB !== 0 || opts.size < MIB) throw new Error('synthetic blob size must be a whole number of MiB');
  const repo = opts.repo ?? 'bench/synth';
  const tag = opts.tag ?? 'v1';
  const pattern = randomBytes(MIB);
  const salt = randomBytes(16);
  const chunks = opts.size / MIB;
  const prefix = createHash('sha256');
  for (let i = 0; i < chunks - 1; i++) prefix.update(pattern);
  const tails: Buffer[] = [];
  const blobs: Array<{ digest: string; size: number }> = [];
  for (let i = 0; i < opts.count; i++) {
    const tail = Buffer.from(pattern);
    tail.writeUInt32BE(i, 0);
    salt.copy(tail, 4);
    tails.push(tail);
    blobs.push({ digest: `sha256:${prefix.copy().update(tail).digest('hex')}`, size: opts.size });
  }
  const byDigest = new Map(blobs.map((b, i) => [b.digest, i]));

  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: blobs.map((b) => b.digest) },
    }),
  );
  const configDigest = sha256(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: blobs.map((b) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: b.digest, size: b.size })),
    }),
  );
  const manifestDigest = sha256(manifest);
  const gets = new Map<string, number>();
  const heads = new Map<string, number>();

  const send = async (req: IncomingMessage, res: ServerResponse, index: number | undefined, small?: Buffer): Promise<void> => {
    const total = small ? small.length : opts.size;
    let start = 0;
    let status = 200;
    const headers: Record<string, string | number> = { 'Content-Type': 'application/octet-stream' };
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${total - 1}/${total}`;
    }
    res.writeHead(status, { ...headers, 'Content-Length': total - start });
    if (req.method === 'HEAD') return void res.end();
    if (small) return void res.end(small.subarray(start));
    for (let pos = start; pos < total && !res.destroyed; ) {
      const chunk = Math.floor(pos / MIB);
      const source = chunk === chunks - 1 ? tails[index!]! : pattern;
      const piece = source.subarray(pos % MIB);
      pos += piece.length;
      if (!res.write(piece)) await drained(res);
    }
    res.end();
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0]!;
    const json = (status: number, body: unknown) => {
      const b = Buffer.from(JSON.stringify(body));
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': b.length });
      res.end(req.method === 'HEAD' ? undefined : b);
    };
    if (path === '/v2/' || path === '/v2') return json(200, {});
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    if (!m || m[1] !== repo) return json(404, { errors: [{ code: 'NAME_UNKNOWN', message: 'unknown repository' }] });
    const [, , kind, ref] = m;
    if (kind === 'manifests') {
      if (ref !== tag && ref !== manifestDigest) return json(404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'unknown manifest' }] });
      res.writeHead(200, {
        'Content-Type': 'application/vnd.oci.image.manifest.v1+json',
        'Content-Length': manifest.length,
        'Docker-Content-Digest': manifestDigest,
      });
      return void res.end(req.method === 'HEAD' ? undefined : manifest);
    }
    const count = req.method === 'HEAD' ? heads : gets;
    count.set(ref!, (count.get(ref!) ?? 0) + 1);
    if (ref === configDigest) return void send(req, res, undefined, config);
    const index = byDigest.get(ref!);
    if (index === undefined) return json(404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'unknown blob' }] });
    res.setHeader('Docker-Content-Digest', ref!);
    void send(req, res, index);
  };

  const sockets = new Set<Socket>();
  const server = createServer(handle);
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    repo,
    tag,
    blobs,
    gets,
    heads,
    stop: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}
