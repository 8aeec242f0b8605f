// In-process implementation of the Docker registry token flow, for a real distribution 2.8
// registry started with `auth: { token: handle }`. Tokens are ES256 JWTs whose signing
// certificate travels in the `x5c` header; distribution verifies that chain against
// `rootcertbundle` (the same self-signed certificate).
import { execFile } from 'node:child_process';
import { randomUUID, sign, timingSafeEqual } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

export interface TokenRequestRecord {
  method: string;
  path: string;
  /** Raw query string without the leading '?'. */
  query: string;
  /** Requested scopes joined by a space, or null when none was asked for. */
  scope: string | null;
  scopes: string[];
  service: string | null;
  /** Whether the request carried credentials (Basic header or OAuth2 password form). */
  withCredentials: boolean;
  /** Authenticated user, or null when anonymous or rejected. */
  user: string | null;
  status: number;
}

export interface TokenServerHandle {
  /** Token realm, e.g. http://127.0.0.1:PORT/token */
  url: string;
  service: string;
  issuer: string;
  /** PEM certificate to use as distribution's `auth.token.rootcertbundle`. */
  certPath: string;
  requests: TokenRequestRecord[];
  stop(): Promise<void>;
}

export interface StartTokenServerOptions {
  /** username -> password */
  users: Record<string, string>;
  /** Grant pull to anonymous requests (default true). When false, anonymous tokens carry no access. */
  anonymousPull?: boolean;
  /** Users allowed to push/delete (default: every user in `users`). */
  pushUsers?: string[];
  /** Token lifetime in seconds (default 300). */
  expiresIn?: number;
}

interface Access {
  type: string;
  name: string;
  actions: string[];
}

const SERVICE = 'sparse-mirror-test-registry';
const ISSUER = 'sparse-mirror-test-token-issuer';

const run = promisify(execFile);

export async function startTokenServer(opts: StartTokenServerOptions): Promise<TokenServerHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'sparse-mirror-token-'));
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=sparse-mirror test token signer',
  ]).catch((err: Error & { stderr?: string }) => {
    throw new Error(`openssl failed to create the token signing certificate: ${err.stderr ?? err.message}`);
  });
  const privateKey = await readFile(keyPath, 'utf8');
  const certDerBase64 = pemBody(await readFile(certPath, 'utf8'));

  const expiresIn = opts.expiresIn ?? 300;
  const anonymousPull = opts.anonymousPull ?? true;
  const pushUsers = new Set(opts.pushUsers ?? Object.keys(opts.users));
  const requests: TokenRequestRecord[] = [];

  const issue = (user: string | null, scopes: string[]): object => {
    const access = scopes.flatMap((s) => grant(parseScope(s), user, anonymousPull, pushUsers));
    const now = Math.floor(Date.now() / 1000);
    const token = signJwt(privateKey, certDerBase64, {
      iss: ISSUER,
      sub: user ?? '',
      aud: SERVICE,
      exp: now + expiresIn,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    });
    return { token, access_token: token, expires_in: expiresIn, issued_at: new Date(now * 1000).toISOString() };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://token.invalid');
    const record: TokenRequestRecord = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.search.slice(1),
      scope: null,
      scopes: [],
      service: null,
      withCredentials: false,
      user: null,
      status: 0,
    };
    requests.push(record);
    const reply = (status: number, body: object, headers: Record<string, string> = {}): void => {
      record.status = status;
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };

    if (url.pathname !== '/token') return reply(404, { error: 'not found' });

    // GET: credentials in a Basic header (Docker / distribution style).
    // POST: OAuth2 form with grant_type=password (containerd's first choice when it has credentials).
    let params = url.searchParams;
    let credentials: { username: string; password: string } | null = null;
    if (req.method === 'POST') {
      params = new URLSearchParams(await readBody(req));
      if (params.get('grant_type') !== 'password') return reply(400, { error: 'unsupported_grant_type' });
      credentials = { username: params.get('username') ?? '', password: params.get('password') ?? '' };
    } else if (req.method === 'GET') {
      credentials = parseBasic(req.headers.authorization);
    } else {
      return reply(405, { error: 'method not allowed' });
    }

    record.scopes = params.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    record.scope = record.scopes.length ? record.scopes.join(' ') : null;
    record.service = params.get('service');
    record.withCredentials = credentials !== null;

    if (record.service !== null && record.service !== SERVICE) {
      return reply(400, { errors: [{ code: 'DENIED', message: `unknown service ${record.service}` }] });
    }
    if (credentials !== null) {
      const expected = opts.users[credentials.username];
      if (expected === undefined || !safeEqual(expected, credentials.password)) {
        return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] }, {
          'www-authenticate': 'Basic realm="sparse-mirror-test-token"',
        });
      }
      record.user = credentials.username;
    }
    reply(200, issue(record.user, record.scopes));
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err.stack ?? err));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}/token`,
    service: SERVICE,
    issuer: ISSUER,
    certPath,
    requests,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Parses `type:name:actions`; the name itself may contain ':' (e.g. a registry host with port). */
function parseScope(scope: string): Access | null {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return null;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter(Boolean),
  };
}

function grant(requested: Access | null, user: string | null, anonymousPull: boolean, pushUsers: Set<string>): Access[] {
  if (requested === null || requested.type !== 'repository') return [];
  const allowed = new Set<string>();
  if (user !== null || anonymousPull) allowed.add('pull');
  if (user !== null && pushUsers.has(user)) {
    allowed.add('push');
    allowed.add('delete');
  }
  const actions = requested.actions.flatMap((a) => (a === '*' ? [...allowed] : allowed.has(a) ? [a] : []));
  return actions.length ? [{ type: requested.type, name: requested.name, actions: [...new Set(actions)] }] : [];
}

function signJwt(privateKeyPem: string, certDerBase64: string, claims: object): string {
  const header = { typ: 'JWT', alg: 'ES256', x5c: [certDerBase64] };
  const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  // JWS wants the raw r||s signature, not DER.
  const signature = sign('sha256', Buffer.from(signingInput), { key: privateKeyPem, dsaEncoding: 'ieee-p1363' });
  return `${signingInput}.${signature.toString('base64url')}`;
}

function base64url(text: string): string {
  return Buffer.from(text).toString('base64url');
}

/** Standard-base64 DER of a PEM certificate, as `x5c` requires. */
function pemBody(pem: string): string {
  return pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
}

function parseBasic(header: string | undefined): { username: string; password: string } | null {
  const match = /^Basic\s+(\S+)$/i.exec(header ?? '');
  if (!match?.[1]) return null;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
