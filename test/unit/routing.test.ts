import { describe, expect, it } from 'vitest';
import { OciError } from '../../src/oci/errors.js';
import { Router, type Upstream } from '../../src/mirror/routing.js';

function upstream(name: string, names: string[], libraryPrefix: boolean): Upstream {
  // The router never touches the client; a distinct object per upstream lets tests tell them apart.
  return { name, names, libraryPrefix, client: { id: name } as any };
}

const dockerHub = upstream('docker.io', ['registry-1.docker.io', 'docker.io', 'index.docker.io'], true);
const ghcr = upstream('ghcr.io', ['ghcr.io'], false);
const local = upstream('127.0.0.1:5001', ['127.0.0.1:5001'], false);
const upstreams = [dockerHub, ghcr, local];

function router(defaultUpstream: Upstream = dockerHub): Router {
  return new Router(upstreams, defaultUpstream);
}

function routeError(r: Router, path: string, ns?: string): OciError {
  try {
    const route = r.route(path, ns);
    throw new Error(`expected an error, got route ${route.key}`);
  } catch (e) {
    if (!(e instanceof OciError)) throw e;
    return e;
  }
}

describe('Router.route with ?ns= (containerd)', () => {
  it('routes ns=docker.io to Docker Hub', () => {
    const r = router(ghcr).route('library/alpine', 'docker.io');
    expect(r.upstream).toBe(dockerHub);
    expect(r.repo).toBe('library/alpine');
    expect(r.key).toBe('docker.io/library/alpine');
  });

  it.each(['registry-1.docker.io', 'index.docker.io', 'docker.io', 'DOCKER.IO', 'Docker.Io'])('any name of an upstream routes there: %s', (ns) => {
    expect(router(ghcr).route('library/alpine', ns).upstream).toBe(dockerHub);
  });

  it('adds library/ for a single name on an upstream with libraryPrefix', () => {
    const r = router(ghcr).route('alpine', 'docker.io');
    expect(r.repo).toBe('library/alpine');
    expect(r.key).toBe('docker.io/library/alpine');
  });

  it('routes a host:port ns to the upstream with that host:port', () => {
    const r = router().route('a/b', '127.0.0.1:5001');
    expect(r.upstream).toBe(local);
    expect(r.repo).toBe('a/b');
    expect(r.key).toBe('127.0.0.1:5001/a/b');
  });

  it('does not add library/ on upstreams without libraryPrefix', () => {
    expect(router().route('alpine', '127.0.0.1:5001').repo).toBe('alpine');
    expect(router().route('app', 'ghcr.io').key).toBe('ghcr.io/app');
  });

  it('ns decides even when the path starts with something host-like', () => {
    const r = router().route('my.org/app', 'ghcr.io');
    expect(r.upstream).toBe(ghcr);
    expect(r.repo).toBe('my.org/app');
  });

  it.each(['127.0.0.1:5002', '127.0.0.1', 'quay.io', 'evil.example.com', 'localhost'])(
    'an unknown ns (%s) is NAME_UNKNOWN 404 naming it and the configured upstreams',
    (ns) => {
      const e = routeError(router(), 'library/alpine', ns);
      expect(e.status).toBe(404);
      expect(e.code).toBe('NAME_UNKNOWN');
      expect(e.message).toContain(`"${ns}"`);
      for (const u of upstreams) expect(e.message).toContain(u.name);
      expect(e.detail).toEqual({ registry: ns, upstreams: upstreams.map((u) => u.name) });
    },
  );

  it('an empty ns is the same as none', () => {
    expect(router().route('library/alpine', '').upstream).toBe(dockerHub);
  });
});

describe('Router.route with a registry path prefix (podman, CRI-O)', () => {
  it('docker.io/library/alpine → Docker Hub, library/alpine', () => {
    const r = router(ghcr).route('docker.io/library/alpine');
    expect(r.upstream).toBe(dockerHub);
    expect(r.repo).toBe('library/alpine');
    expect(r.key).toBe('docker.io/library/alpine');
  });

  it('docker.io/alpine gets library/ added', () => {
    expect(router(ghcr).route('docker.io/alpine').repo).toBe('library/alpine');
  });

  it('ghcr.io/org/app → ghcr', () => {
    const r = router().route('ghcr.io/org/app');
    expect(r.upstream).toBe(ghcr);
    expect(r.repo).toBe('org/app');
    expect(r.key).toBe('ghcr.io/org/app');
  });

  it('127.0.0.1:5001/a/b → the host:port upstream', () => {
    const r = router().route('127.0.0.1:5001/a/b');
    expect(r.upstream).toBe(local);
    expect(r.key).toBe('127.0.0.1:5001/a/b');
  });

  it('the prefix is matched case-insensitively', () => {
    expect(router(ghcr).route('Docker.IO/library/alpine').upstream).toBe(dockerHub);
  });

  it.each(['evil.example.com/x', 'quay.io/org/app', 'localhost/x', '127.0.0.1:5002/a', 'registry.local:443/a/b'])(
    'an unconfigured registry prefix is NAME_UNKNOWN: %s',
    (path) => {
      const e = routeError(router(), path);
      expect(e.status).toBe(404);
      expect(e.code).toBe('NAME_UNKNOWN');
      const host = path.slice(0, path.indexOf('/'));
      expect(e.message).toContain(host);
      expect(e.message).toContain('docker.io, ghcr.io, 127.0.0.1:5001');
    },
  );

  it('a prefix with nothing after it is an invalid name', () => {
    const e = routeError(router(), 'docker.io/');
    expect(e.code).toBe('NAME_INVALID');
  });
});

describe('Router.route to the default upstream (Docker registry-mirrors)', () => {
  it('a single name gets library/ on Docker Hub', () => {
    const r = router().route('alpine');
    expect(r.upstream).toBe(dockerHub);
    expect(r.repo).toBe('library/alpine');
    expect(r.key).toBe('docker.io/library/alpine');
  });

  it('library/alpine is not prefixed twice', () => {
    expect(router().route('library/alpine').repo).toBe('library/alpine');
  });

  it('an org/repo name is left alone', () => {
    const r = router().route('grafana/grafana');
    expect(r.repo).toBe('grafana/grafana');
    expect(r.key).toBe('docker.io/grafana/grafana');
  });

  it('no library/ when the default upstream does not want it', () => {
    const r = router(ghcr).route('alpine');
    expect(r.upstream).toBe(ghcr);
    expect(r.repo).toBe('alpine');
    expect(r.key).toBe('ghcr.io/alpine');
  });

  it('a first component that is not host-like stays part of the repository', () => {
    const r = router().route('library/alpine');
    expect(r.upstream).toBe(dockerHub);
    expect(r.repo).toBe('library/alpine');
  });
});

describe('Router.route refuses invalid names with NAME_INVALID 400', () => {
  it.each(['..', 'Alpine', 'library/Alpine', 'a/../b', 'a%2Fb', 'a%2F..%2Fb', 'a//b', 'a/', '', 'a b', 'a\\b', 'library/alpine/'])(
    '%j (no ns)',
    (path) => {
      const e = routeError(router(), path);
      expect(e.status).toBe(400);
      expect(e.code).toBe('NAME_INVALID');
    },
  );

  it.each(['..', '../x', 'a/../b', 'Alpine', 'a%2Fb', '/a'])('%j (with ns=docker.io)', (path) => {
    const e = routeError(router(), path, 'docker.io');
    expect(e.status).toBe(400);
    expect(e.code).toBe('NAME_INVALID');
  });

  it.each(['docker.io/..', 'docker.io/a/../b', 'docker.io/Alpine', 'ghcr.io/a%2Fb', 'ghcr.io//x'])('%j (after a prefix)', (path) => {
    const e = routeError(router(), path);
    expect(e.status).toBe(400);
    expect(e.code).toBe('NAME_INVALID');
  });

  it('../x without ns is refused (never routed anywhere)', () => {
    const e = routeError(router(), '../x');
    expect(e.status).toBeGreaterThanOrEqual(400);
    expect(e.status).toBeLessThan(500);
  });

  it('clips a huge name in the message', () => {
    const e = routeError(router(), 'A'.repeat(10_000));
    expect(e.code).toBe('NAME_INVALID');
    expect(e.message.length).toBeLessThan(400);
  });

  it('a name over 255 characters is invalid', () => {
    expect(routeError(router(), 'a'.repeat(256)).code).toBe('NAME_INVALID');
  });
});

describe('Router.find', () => {
  it('finds by any name, case-insensitively, and nothing else', () => {
    const r = router();
    expect(r.find('index.docker.io')).toBe(dockerHub);
    expect(r.find('GHCR.IO')).toBe(ghcr);
    expect(r.find('127.0.0.1:5001')).toBe(local);
    expect(r.find('127.0.0.1')).toBeUndefined();
    expect(r.find('')).toBeUndefined();
  });
});

describe('Router.route: the local (push) namespace', () => {
  const withLocal = () => new Router(upstreams, dockerHub, 'local');

  it('upstream routes are not local', () => {
    expect(router().route('alpine').local).toBe(false);
    expect(withLocal().route('ghcr.io/org/app').local).toBe(false);
    expect(withLocal().route('library/alpine', 'docker.io').local).toBe(false);
  });

  it('local/<name> is local, keyed by the path as is, and never gets library/', () => {
    const r = withLocal().route('local/app');
    expect(r.local).toBe(true);
    expect(r.repo).toBe('local/app');
    expect(r.key).toBe('local/app');
    expect(r.upstream.client).toBeUndefined();
    expect(upstreams).not.toContain(r.upstream);
    expect(withLocal().route('local/team/app').key).toBe('local/team/app');
  });

  it('without a local namespace, local/app goes to the default upstream', () => {
    const r = router().route('local/app');
    expect(r.local).toBe(false);
    expect(r.upstream).toBe(dockerHub);
    expect(r.key).toBe('docker.io/local/app');
  });

  it('with ns, local/app is a repository of that upstream', () => {
    const r = withLocal().route('local/app', 'ghcr.io');
    expect(r.local).toBe(false);
    expect(r.upstream).toBe(ghcr);
    expect(r.key).toBe('ghcr.io/local/app');
  });

  it('only the whole first component counts: localx/app and a bare "local" are not local', () => {
    expect(withLocal().route('localx/app').local).toBe(false);
    expect(withLocal().route('local').local).toBe(false);
  });

  it.each(['local/..', 'local/a/../b', 'local/App', 'local/', 'local//a'])('refuses invalid local names: %j', (path) => {
    const e = routeError(withLocal(), path);
    expect(e.status).toBe(400);
    expect(e.code).toBe('NAME_INVALID');
  });
});
