import { z } from 'zod';
import { parsePlatform } from '../oci/platform.js';

const platformString = z.string().refine((s) => parsePlatform(s) !== undefined, {
  message: 'expected os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm/v7',
});

const upstreamSchema = z.object({
  /** Registry API base URL, e.g. https://registry-1.docker.io. */
  url: z.url({ protocol: /^https?$/ }),
  /** Other names clients use for it: `?ns=` values and path prefixes (docker.io for Docker Hub). */
  aliases: z.array(z.string().min(1)).default([]),
  username: z.string().optional(),
  password: z.string().optional(),
  /** Prefix single-name repositories with `library/` (Docker Hub's official images). Defaults on for Docker Hub. */
  libraryPrefix: z.boolean().optional(),
});

export const configSchema = z
  .object({
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(5000),
    /** Store directory: blobs on disk and mirror.db (SQLite). Relative paths are from the working directory. */
    dataDir: z.string().min(1).default('data'),
    /** Never contact an upstream: serve only what the store holds (air-gapped sites). */
    offline: z.boolean().default(false),
    /** The platforms this mirror carries. */
    platforms: z.array(platformString).min(1).default(['linux/amd64', 'linux/arm64']),
    upstreams: z.array(upstreamSchema).min(1),
    /** Host or alias of the upstream for requests that name none (Docker's registry-mirrors). Default: the first. */
    defaultUpstream: z.string().optional(),
    tags: z
      .object({
        /** How long a tag is served from the store before upstream is asked (with a HEAD) whether it moved. */
        ttlSeconds: z.number().nonnegative().default(300),
      })
      .prefault({}),
    /**
     * How a request for a platform the mirror does not carry is answered. `denied` (403 DENIED) is
     * shown to people by containerd and skopeo; `not-found` (404 MANIFEST_UNKNOWN) is what stock
     * registries say, but containerd hides its message.
     */
    notMirroredResponse: z.enum(['denied', 'not-found']).default('denied'),
    blobs: z
      .object({
        /** Fetch a blob only when a stored manifest of the same repository references it. */
        requireReference: z.boolean().default(true),
      })
      .prefault({}),
    limits: z
      .object({
        maxManifestBytes: z.number().int().positive().default(4 * 1024 * 1024),
      })
      .prefault({}),
    upstream: z
      .object({
        connectTimeoutMs: z.number().int().positive().default(10_000),
        headersTimeoutMs: z.number().int().positive().default(30_000),
        bodyIdleTimeoutMs: z.number().int().positive().default(60_000),
        attempts: z.number().int().min(1).max(10).default(3),
      })
      .prefault({}),
    log: z.object({ level: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info') }).prefault({}),
  })
  .superRefine((c, ctx) => {
    if (c.defaultUpstream && !c.upstreams.some((u) => upstreamNames(u).includes(c.defaultUpstream!))) {
      ctx.addIssue({ code: 'custom', path: ['defaultUpstream'], message: `"${c.defaultUpstream}" names no configured upstream` });
    }
    c.upstreams.forEach((u, i) => {
      if ((u.username === undefined) !== (u.password === undefined)) {
        ctx.addIssue({ code: 'custom', path: ['upstreams', i], message: 'username and password go together' });
      }
    });
  });

export type MirrorConfigInput = z.input<typeof configSchema>;
export type MirrorConfig = z.output<typeof configSchema>;
export type UpstreamConfig = MirrorConfig['upstreams'][number];

/** The names an upstream answers to: its host[:port] and its aliases. */
export function upstreamNames(u: { url: string; aliases?: string[] }): string[] {
  return [new URL(u.url).host, ...(u.aliases ?? [])];
}

/** Turns zod's issues into one line per bad key, naming the key. */
export function describeConfigErrors(error: z.ZodError): string {
  return error.issues
    .map((i) => `  ${i.path.length ? i.path.join('.') : '(config)'}: ${i.message}`)
    .join('\n');
}
