import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';
import type { MirrorConfig, Role } from '../config/schema.js';

export interface Identity {
  user: string;
  role: Role;
}

interface UserEntry {
  hash: string;
  role: Role;
}

const RANK: Record<Role, number> = { pull: 1, push: 2, admin: 3 };

export function hasRole(identity: Identity, needed: Role): boolean {
  return RANK[identity.role] >= RANK[needed];
}

/**
 * The mirror's own client authentication: bcrypt users (config and htpasswd) and static tokens.
 * Clients get a Basic challenge, which docker, containerd, podman and skopeo all answer; a token
 * works as `Authorization: Bearer <token>` or as the password of Basic auth.
 */
export class Authenticator {
  /** bcrypt is deliberately slow and clients send credentials on every request: remember successes briefly. */
  private readonly verified = new LRUCache<string, Identity>({ max: 1000, ttl: 5 * 60_000 });

  private constructor(
    readonly realm: string,
    private readonly users: Map<string, UserEntry>,
    private readonly tokens: Array<{ digest: Buffer; role: Role }>,
  ) {}

  static async create(auth: MirrorConfig['auth']): Promise<Authenticator> {
    const users = new Map<string, UserEntry>();
    if (auth.htpasswd) {
      for (const [user, hash] of parseHtpasswd(await readFile(auth.htpasswd, 'utf8'))) users.set(user, { hash, role: auth.htpasswdRole });
    }
    for (const u of auth.users) users.set(u.username, { hash: u.passwordHash, role: u.role });
    const tokens = auth.tokens.map((t) => ({ digest: sha256(t.token), role: t.role }));
    return new Authenticator(auth.realm, users, tokens);
  }

  challenge(): string {
    return `Basic realm="${this.realm.replace(/"/g, '')}"`;
  }

  async authenticate(authorization: string | undefined): Promise<Identity | undefined> {
    if (!authorization) return undefined;
    const key = sha256(authorization).toString('hex');
    const cached = this.verified.get(key);
    if (cached) return cached;
    const identity = await this.check(authorization);
    if (identity) this.verified.set(key, identity);
    return identity;
  }

  private async check(authorization: string): Promise<Identity | undefined> {
    const [scheme, value = ''] = authorization.trim().split(/\s+/, 2) as [string, string?];
    if (/^bearer$/i.test(scheme)) return this.tokenIdentity(value, 'token');
    if (!/^basic$/i.test(scheme)) return undefined;
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return undefined;
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const entry = this.users.get(user);
    if (entry && (await bcrypt.compare(password, entry.hash))) return { user, role: entry.role };
    return this.tokenIdentity(password, user || 'token');
  }

  private tokenIdentity(token: string, user: string): Identity | undefined {
    if (!token) return undefined;
    const digest = sha256(token);
    const match = this.tokens.find((t) => timingSafeEqual(t.digest, digest));
    return match ? { user, role: match.role } : undefined;
  }
}

/** `user:hash` lines; blank lines and comments skipped. Only bcrypt hashes are accepted. */
export function parseHtpasswd(text: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const line of text.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) continue;
    const colon = trimmed.indexOf(':');
    if (colon <= 0) continue;
    const hash = trimmed.slice(colon + 1);
    if (/^\$2[aby]\$/.test(hash)) out.push([trimmed.slice(0, colon), hash]);
  }
  return out;
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
