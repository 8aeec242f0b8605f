// HTTPS_PROXY / HTTP_PROXY / NO_PROXY read the way Go's http.ProxyFromEnvironment reads them
// (Docker, containerd and distribution all use it), and config overriding the environment.
import { describe, expect, it } from 'vitest';
import { describeProxy, proxyFromEnvironment, upstreamTransport } from '../../src/upstream/transport.js';

const P = 'http://proxy.internal:3128';

describe('proxyFromEnvironment', () => {
  it('uses HTTPS_PROXY for https and HTTP_PROXY for http, upper case before lower', () => {
    expect(proxyFromEnvironment('https://ghcr.io', { HTTPS_PROXY: P, HTTP_PROXY: 'http://other:1' })).toBe(P);
    expect(proxyFromEnvironment('http://reg.internal:5000', { HTTPS_PROXY: P, HTTP_PROXY: 'http://other:1' })).toBe('http://other:1');
    expect(proxyFromEnvironment('https://ghcr.io', { HTTPS_PROXY: P, https_proxy: 'http://lower:1' })).toBe(P);
    expect(proxyFromEnvironment('https://ghcr.io', { https_proxy: 'http://lower:1' })).toBe('http://lower:1');
    expect(proxyFromEnvironment('https://ghcr.io', { HTTP_PROXY: P })).toBeUndefined();
    expect(proxyFromEnvironment('https://ghcr.io', {})).toBeUndefined();
  });

  it('takes a proxy without a scheme as http://', () => {
    expect(proxyFromEnvironment('https://ghcr.io', { HTTPS_PROXY: 'proxy.internal:3128' })).toBe(P);
  });

  it('never proxies localhost or loopback addresses', () => {
    for (const url of ['https://localhost:5000', 'https://127.0.0.1:5000', 'https://127.8.9.10', 'https://[::1]:5000']) {
      expect(proxyFromEnvironment(url, { HTTPS_PROXY: P }), url).toBeUndefined();
    }
  });

  it('honours NO_PROXY hosts, domains, IPs, CIDRs, ports and *', () => {
    const env = (NO_PROXY: string) => ({ HTTPS_PROXY: P, NO_PROXY });
    expect(proxyFromEnvironment('https://registry.internal', env('registry.internal'))).toBeUndefined();
    expect(proxyFromEnvironment('https://a.b.example.com', env('example.com'))).toBeUndefined();
    expect(proxyFromEnvironment('https://a.example.com', env('.example.com'))).toBeUndefined();
    expect(proxyFromEnvironment('https://example.com', env('.example.com'))).toBeUndefined();
    expect(proxyFromEnvironment('https://notexample.com', env('example.com'))).toBe(P);
    expect(proxyFromEnvironment('https://10.1.2.3', env('10.0.0.0/8'))).toBeUndefined();
    expect(proxyFromEnvironment('https://11.1.2.3', env('10.0.0.0/8'))).toBe(P);
    expect(proxyFromEnvironment('https://10.1.2.3', env('10.1.2.3'))).toBeUndefined();
    expect(proxyFromEnvironment('https://reg.internal:5000', env('reg.internal:5000'))).toBeUndefined();
    expect(proxyFromEnvironment('https://reg.internal:5001', env('reg.internal:5000'))).toBe(P);
    expect(proxyFromEnvironment('https://reg.internal', env('reg.internal:443'))).toBeUndefined();
    expect(proxyFromEnvironment('https://ghcr.io', env(' foo.com , ghcr.io '))).toBeUndefined();
    expect(proxyFromEnvironment('https://ghcr.io', env('*'))).toBeUndefined();
    expect(proxyFromEnvironment('https://ghcr.io', { HTTPS_PROXY: P, no_proxy: 'ghcr.io' })).toBeUndefined();
  });
});

describe('upstreamTransport', () => {
  it('lets the upstream\'s proxy, then upstream.proxy, override the environment; \'\' means none', () => {
    const env = { HTTPS_PROXY: P };
    expect(upstreamTransport({ url: 'https://ghcr.io' }, undefined, env).proxy).toBe(P);
    expect(upstreamTransport({ url: 'https://ghcr.io' }, 'http://global:1', env).proxy).toBe('http://global:1');
    expect(upstreamTransport({ url: 'https://ghcr.io', proxy: 'http://mine:1' }, 'http://global:1', env).proxy).toBe('http://mine:1');
    expect(upstreamTransport({ url: 'https://ghcr.io', proxy: '' }, 'http://global:1', env).proxy).toBeUndefined();
    expect(upstreamTransport({ url: 'https://ghcr.io' }, '', env).proxy).toBeUndefined();
  });

  it('describes a proxy for logs without its credentials', () => {
    expect(describeProxy('http://user:s3cret@proxy.internal:3128/')).toBe('http://proxy.internal:3128');
  });
});
