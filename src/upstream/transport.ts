import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

/** How the mirror connects to one upstream: its TLS trust and identity, and any egress proxy. */
export interface UpstreamTransport {
  /** Extra CA certificates (PEM) trusted for this upstream, on top of the system's. */
  ca?: Buffer;
  /** Client certificate and key (PEM) for an upstream that wants mTLS. */
  cert?: Buffer;
  key?: Buffer;
  /** Skip certificate verification (an explicit, logged opt-in). */
  insecure?: boolean;
  /** Forward proxy URL, possibly with credentials; undefined: connect directly. */
  proxy?: string;
}

export interface TransportConfig {
  url: string;
  ca?: string;
  clientCert?: string;
  clientKey?: string;
  insecure?: boolean;
  /** Overrides the environment: a proxy URL, or '' for none. */
  proxy?: string;
}

/**
 * Reads the upstream's PEM files (a missing one is an error naming the key and file) and picks
 * its proxy: `proxy` from config when set, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY the way Go
 * programs read them.
 */
export function upstreamTransport(u: TransportConfig, globalProxy?: string, env: NodeJS.ProcessEnv = process.env): UpstreamTransport {
  const read = (key: 'ca' | 'clientCert' | 'clientKey'): Buffer | undefined => {
    const path = u[key];
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (e) {
      throw new Error(`upstream ${u.url}: ${key}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  const configured = u.proxy ?? globalProxy;
  const proxy = configured !== undefined ? configured || undefined : proxyFromEnvironment(u.url, env);
  return { ca: read('ca'), cert: read('clientCert'), key: read('clientKey'), insecure: u.insecure, proxy };
}

/**
 * Go's `http.ProxyFromEnvironment` (golang.org/x/net/http/httpproxy): HTTPS_PROXY for https URLs,
 * HTTP_PROXY for http, upper case first; NO_PROXY a comma-separated list of hosts, domains
 * (`example.com` and `.example.com` both match subdomains), IPs, CIDRs, each optionally with a
 * port, or `*`. localhost and loopback addresses are never proxied.
 */
export function proxyFromEnvironment(target: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const url = new URL(target);
  const pick = (name: string) => env[name] || env[name.toLowerCase()] || undefined;
  const raw = url.protocol === 'https:' ? pick('HTTPS_PROXY') : pick('HTTP_PROXY');
  if (!raw) return undefined;
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  if (host === 'localhost' || isLoopback(host)) return undefined;
  if (noProxyMatches(pick('NO_PROXY') ?? '', host, port)) return undefined;
  // Like Go: a proxy given without a scheme is http://.
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `http://${raw}`;
}

function noProxyMatches(list: string, host: string, port: string): boolean {
  for (let entry of list.split(',').map((e) => e.trim().toLowerCase()).filter(Boolean)) {
    if (entry === '*') return true;
    if (entry.includes('/')) {
      if (isIP(host) && inCidr(host, entry)) return true;
      continue;
    }
    let entryPort: string | undefined;
    const m = /^(.*?)(?::(\d+))?$/.exec(entry.startsWith('[') ? entry.replace(/^\[(.*)\](:\d+)?$/, '$1$2') : entry);
    if (m && m[2] && !isIP(entry)) {
      entry = m[1]!;
      entryPort = m[2];
    }
    if (entryPort && entryPort !== port) continue;
    if (isIP(entry)) {
      if (entry === host) return true;
      continue;
    }
    const domain = entry.replace(/^\*?\./, '');
    if (host === domain || host.endsWith(`.${domain}`)) return true;
  }
  return false;
}

function isLoopback(host: string): boolean {
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

function inCidr(ip: string, cidr: string): boolean {
  const [base, bitsText] = cidr.split('/');
  const bits = Number(bitsText);
  if (isIP(ip) !== 4 || isIP(base!) !== 4 || !Number.isInteger(bits) || bits < 0 || bits > 32) return false;
  const n = (a: string) => a.split('.').reduce((acc, o) => (acc << 8) + Number(o), 0) >>> 0;
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return (n(ip) & mask) === (n(base!) & mask);
}

/** A proxy URL fit for a log line: scheme, host and port, never its credentials. */
export function describeProxy(proxy: string): string {
  try {
    const u = new URL(proxy);
    return `${u.protocol}//${u.host}`;
  } catch {
    return '(unparseable proxy URL)';
  }
}
