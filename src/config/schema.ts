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
  /** A PEM file of CA certificates trusted for this upstream besides the system's (an internal CA). */
  ca: z.string().min(1).optional(),
  /** Client certificate and key (PEM files) for an upstream that requires mTLS. */
  clientCert: z.string().min(1).optional(),
  clientKey: z.string().min(1).optional(),
  /** Do not verify this upstream's certificate (self-signed). Logged as a warning at start-up. */
  insecure: z.boolean().optional(),
  /** Forward proxy for this upstream (`http://user:pass@proxy:3128`), or '' for none; overrides `upstream.proxy` and the environment. */
  proxy: z.string().optional(),
});

const PROXY_URL = /^https?:\/\/[^/]+/;

export const ROLES = ['pull', 'push', 'admin'] as const;
export type Role = (typeof ROLES)[number];

const authSchema = z.object({
  /** Off by default: anyone who can reach the mirror may pull. */
  enabled: z.boolean().default(false),
  realm: z.string().default('sparse-mirror'),
  /** An htpasswd file of bcrypt hashes (`htpasswd -B`); its users get `htpasswdRole`. */
  htpasswd: z.string().optional(),
  htpasswdRole: z.enum(ROLES).default('pull'),
  users: z
    .array(
      z.object({
        username: z.string().min(1),
        /** bcrypt hash ($2a$/$2b$/$2y$), never the password itself. */
        passwordHash: z.string().regex(/^\$2[aby]\$\d{2}\$.{53}$/, 'expected a bcrypt hash'),
        role: z.enum(ROLES).default('pull'),
      }),
    )
    .default([]),
  /** Static bearer tokens (or Basic with the token as password), for CI and scripts. */
  tokens: z.array(z.object({ token: z.string().min(16, 'tokens must be at least 16 characters'), role: z.enum(ROLES).default('pull') })).default([]),
});

const pushSchema = z.object({
  /** Off by default. When on, pushes need a user with the push or admin role (auth.enabled). */
  enabled: z.boolean().default(false),
  /** Repositories under this first path component are local: pushed here, never fetched upstream. */
  namespace: z.string().regex(/^[a-z0-9]+(?:[._-][a-z0-9]+)*$/).default('local'),
  /**
   * Which children an image index must have present when pushed: `all` (stock registries),
   * `none` (any sparse index), or a list of platforms whose children must be present.
   */
  indexChildren: z.union([z.enum(['all', 'none']), z.array(platformString).min(1)]).default('all'),
  /** Allow DELETE of manifests and tags (push role). */
  allowDelete: z.boolean().default(false),
  /** An upload session idle this long is cancelled and its data removed. */
  uploadTimeoutSeconds: z.number().positive().default(3600),
});

const s3Schema = z
  .object({
    /** The S3 API endpoint (Ceph RGW, MinIO, ...); unset for AWS itself. */
    endpoint: z.url({ protocol: /^https?$/ }).optional(),
    region: z.string().min(1).default('us-east-1'),
    bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'expected an S3 bucket name (3-63 of a-z, 0-9, . and -)'),
    /** Key prefix inside the bucket, e.g. `mirror/`, so that one bucket can hold several mirrors. */
    prefix: z.string().regex(/^([A-Za-z0-9._-]+\/)*$/, 'expected path segments each ending in /, e.g. mirror/').default(''),
    /** Path-style URLs (`endpoint/bucket/key`): what RGW and MinIO expect without wildcard DNS. */
    forcePathStyle: z.boolean().default(false),
    accessKeyId: z.string().min(1).optional(),
    secretAccessKey: z.string().min(1).optional(),
    /**
     * `gc` deletes nothing from the bucket written this recently (replicas may be between a blob
     * and the manifest that names it) nor anything a manifest written this recently names.
     */
    gcGraceSeconds: z.number().nonnegative().default(3600),
    /**
     * `gc` keeps a manifest no tag record names (an image pulled by digest, or a moved tag's
     * old image) until it was written this long ago; then it goes, and the next replica that
     * needs it fetches it again.
     */
    untaggedRetentionDays: z.number().nonnegative().default(7),
  })
  .strict();

const clusterSchema = z
  .object({
    /** This replica's URL as the other replicas reach it, e.g. http://10.0.0.5:5000 (in Kubernetes, from the pod IP). */
    advertise: z.url({ protocol: /^https?$/ }),
    /** The replicas' URLs (this one may be among them). */
    peers: z.array(z.url({ protocol: /^https?$/ })).default([]),
    /** Or a DNS name that resolves to every replica's address (a Kubernetes headless Service); port and scheme are advertise's. */
    dns: z.string().regex(/^[A-Za-z0-9.-]+$/, 'expected a host name').optional(),
    /** Shared by every replica (at least 16 characters): peer requests are signed with it, and refused without. */
    secret: z.string().min(16, 'cluster.secret must be at least 16 characters'),
    /** How often a replica checks that the others are alive (and re-resolves `dns`). */
    probeIntervalMs: z.number().int().positive().default(2000),
    /**
     * A replica that sends nothing for this long (no headers, or a stalled body) is taken for cut
     * off: a download streaming from it goes on from the next replica or upstream.
     */
    peerTimeoutMs: z.number().int().positive().default(10_000),
  })
  .strict();

/** `ghcr.io/org/*` (one path component), `ghcr.io/**` (any depth): the mirror's repository keys. */
const repositoryPattern = z
  .string()
  .regex(/^[a-z0-9*][a-z0-9._:*/-]*$/, 'expected a repository pattern like ghcr.io/org/* or docker.io/library/alpine (lower case; * one component, ** any depth)');

/** A keyless signer, as `cosign verify --certificate-identity[-regexp] --certificate-oidc-issuer` names it. */
const signerIdentitySchema = z
  .object({
    /** The certificate's subject alternative name (an e-mail or URI), exactly. */
    subject: z.string().min(1).optional(),
    /** Or a regular expression the whole subject must match. */
    subjectRegExp: z
      .string()
      .min(1)
      .refine((r) => isRegExp(r), 'not a valid regular expression')
      .optional(),
    /** The OIDC issuer in the certificate (Fulcio's extension 1.3.6.1.4.1.57264.1.8 or .1.1), exactly. */
    issuer: z.string().min(1),
  })
  .strict()
  .refine((i) => (i.subject === undefined) !== (i.subjectRegExp === undefined), 'give subject or subjectRegExp (one of them)');

const signaturePolicySchema = z
  .object({
    repositories: z.array(repositoryPattern).min(1),
    /** PEM public keys (cosign.pub: ECDSA P-256; Ed25519 and RSA too); one verifying is enough. */
    keys: z.array(z.string().min(1)).default([]),
    /**
     * Keyless signatures (Sigstore bundles with a certificate): the Sigstore TrustedRoot JSON whose
     * certificate authorities, timestamp authorities and logs are trusted. Read at start-up only.
     */
    trustedRoot: z.string().min(1).optional(),
    /** Who may have signed keylessly: one matching is enough. Needs trustedRoot. */
    identities: z.array(signerIdentitySchema).default([]),
    /** `enforce`: unverified images are refused (403). `warn`: served, and the log says why. */
    mode: z.enum(['enforce', 'warn']).default('enforce'),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.keys.length === 0 && !p.trustedRoot) ctx.addIssue({ code: 'custom', path: ['keys'], message: 'name keys, or a trustedRoot and identities for keyless signatures' });
    if (p.trustedRoot && p.identities.length === 0) ctx.addIssue({ code: 'custom', path: ['identities'], message: 'a trustedRoot needs identities: who may sign (subject and issuer)' });
    if (!p.trustedRoot && p.identities.length > 0) ctx.addIssue({ code: 'custom', path: ['trustedRoot'], message: 'identities need a trustedRoot file to verify certificates with' });
  });

function isRegExp(source: string): boolean {
  try {
    new RegExp(source);
    return true;
  } catch {
    return false;
  }
}

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
        /**
         * When a client pulls a blob of an image, fetch the image's next missing blob once that
         * one is stored, so clients that pull one blob at a time find it ready. One blob ahead of
         * the client, at most two such fetches at once.
         */
        readAhead: z.boolean().default(true),
        /** Send blob bodies (stored ones, and downloads being followed) with sendfile(2), the native addon, instead of through user space. */
        sendfile: z.boolean().default(true),
        /**
         * With sendfile on: clients on the mirror's own host (loopback) get bodies copied through a
         * buffer instead. Over loopback the client copies sendfile's pages out itself, and whether
         * that costs it more than a copy saves the mirror depends on the host: on one (2026-12-03)
         * curl paid 2-3x the kernel time per byte; on another (2026-12-07) sendfile was faster for
         * both (16 curl clients: 6.0 against 4.3 GB/s). Measure with bench scenario 1 before setting it.
         */
        copyToLocalClients: z.boolean().default(false),
        /**
         * A fetched blob is flushed to disk (then renamed into place and recorded) once no blob
         * has been written or sent to a client for this long, at most 5 s after it verified: one
         * write-out after a pull instead of a forced write-out and disk cache flush per blob during
         * it, and none in the tail of the pull (150 ms was too short: the flush stalled skopeo's
         * last writes).
         * Clients never wait for it. 0 flushes each blob as soon as it verifies.
         */
        flushQuietMs: z.number().int().min(0).max(60_000).default(1_000),
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
        /** Forward proxy for every upstream, or '' for none; overrides HTTPS_PROXY/HTTP_PROXY/NO_PROXY. */
        proxy: z.string().optional(),
      })
      .prefault({}),
    /**
     * Serve HTTPS (HTTP/1.1) with this certificate chain and key (PEM files), reloaded when the
     * files change. `clientCA`: require client certificates signed by it (mTLS).
     */
    tls: z
      .object({
        cert: z.string().min(1),
        key: z.string().min(1),
        clientCA: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
    log: z.object({ level: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info') }).prefault({}),
    auth: authSchema.prefault({}),
    push: pushSchema.prefault({}),
    storage: z
      .object({
        /** When the store grows past this, `serve` evicts least-recently-used images. Unset: no limit. */
        maxBytes: z.number().int().positive().optional(),
        /** `gc` forgets tags not pulled for this many days. Unset: tags are kept. */
        tagRetentionDays: z.number().positive().optional(),
        /**
         * The shared tier: an S3-compatible bucket that replicas share (blobs, manifests, tag
         * records). The local store becomes a cache of it. Credentials: `accessKeyId` and
         * `secretAccessKey` here, else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Unset: one node.
         */
        s3: s3Schema.optional(),
      })
      .prefault({}),
    /** Replicas over one bucket: one upstream fetch per digest across all of them (needs storage.s3). */
    cluster: clusterSchema.optional(),
    /**
     * Prefetch, sync and export also carry each image's signatures, SBOMs and attestations: its
     * OCI referrers and cosign's `sha256-<hex>.sig`/`.att`/`.sbom` tags.
     */
    referrers: z.boolean().default(true),
    /**
     * Admit only signed images: the first policy whose pattern matches a repository decides; a
     * repository no policy matches is not checked. Keyless (Fulcio) signatures only under a
     * policy's own trustedRoot file: no trust root is ever fetched at run time.
     */
    signatures: z.object({ policies: z.array(signaturePolicySchema).default([]) }).strict().prefault({}),
    sync: z
      .object({
        /** References `serve` keeps fresh in the background, e.g. docker.io/library/alpine:3.20. */
        images: z.array(z.string().min(1)).default([]),
        /** Also every upstream tag of these repositories matching the pattern (a regular expression). */
        tagPatterns: z.array(z.object({ repository: z.string().min(1), pattern: z.string().min(1) })).default([]),
        intervalSeconds: z.number().positive().default(3600),
      })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    if (c.defaultUpstream && !c.upstreams.some((u) => upstreamNames(u).includes(c.defaultUpstream!))) {
      ctx.addIssue({ code: 'custom', path: ['defaultUpstream'], message: `"${c.defaultUpstream}" names no configured upstream` });
    }
    if (c.push.enabled && c.upstreams.some((u) => upstreamNames(u).includes(c.push.namespace))) {
      ctx.addIssue({ code: 'custom', path: ['push', 'namespace'], message: `"${c.push.namespace}" is also an upstream's name` });
    }
    if (c.push.enabled && !c.auth.enabled) {
      ctx.addIssue({ code: 'custom', path: ['push', 'enabled'], message: 'pushing needs auth.enabled with a user or token of role push or admin' });
    }
    if (c.cluster && !c.storage.s3) {
      ctx.addIssue({ code: 'custom', path: ['cluster'], message: 'replicas share their content through a bucket: set storage.s3 too' });
    }
    if (c.cluster && c.cluster.peers.length === 0 && !c.cluster.dns) {
      ctx.addIssue({ code: 'custom', path: ['cluster'], message: 'name the replicas: cluster.peers or cluster.dns' });
    }
    if (c.upstream.proxy && !PROXY_URL.test(c.upstream.proxy)) {
      ctx.addIssue({ code: 'custom', path: ['upstream', 'proxy'], message: 'expected an http:// or https:// proxy URL' });
    }
    c.upstreams.forEach((u, i) => {
      if ((u.clientCert === undefined) !== (u.clientKey === undefined)) {
        ctx.addIssue({ code: 'custom', path: ['upstreams', i], message: 'clientCert and clientKey go together' });
      }
      if (u.proxy && !PROXY_URL.test(u.proxy)) ctx.addIssue({ code: 'custom', path: ['upstreams', i, 'proxy'], message: 'expected an http:// or https:// proxy URL' });
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
  // Cross-checks run even when the url itself failed validation: that error is reported there.
  const host = URL.canParse(u.url) ? [new URL(u.url).host] : [];
  return [...host, ...(u.aliases ?? [])];
}

/** Turns zod's issues into one line per bad key, naming the key. */
export function describeConfigErrors(error: z.ZodError): string {
  return error.issues
    .map((i) => `  ${i.path.length ? i.path.join('.') : '(config)'}: ${i.message}`)
    .join('\n');
}
