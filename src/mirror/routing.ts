import { ociErrors } from '../oci/errors.js';
import { isValidRegistryHost, isValidRepositoryName, looksLikeRegistryHost } from '../oci/reference.js';
import type { UpstreamClient } from '../upstream/client.js';

/** A configured upstream registry as the router sees it. */
export interface Upstream {
  /** Canonical name: the first alias, else host[:port]. Also the store's namespace for it. */
  name: string;
  /** Every name that routes here (host[:port] and aliases), lower-case. */
  names: string[];
  libraryPrefix: boolean;
  /** Absent for the local namespace: content pushed here, never fetched from anywhere. */
  client?: UpstreamClient;
}

/** Where a request goes: the upstream, its repository there, and the mirror's key for it. */
export interface Route {
  upstream: Upstream;
  /** Repository name at the upstream, e.g. `library/alpine`. */
  repo: string;
  /** The mirror's repository key: `<upstream name>/<repo>`, e.g. `docker.io/library/alpine`. */
  key: string;
  /** A repository of the local (push) namespace: never routed to an upstream. */
  local: boolean;
  /**
   * The repository as the client named it (`registry.example/team/app` with `?ns=` or a path
   * prefix; `<mirror host>/library/app` for the default upstream), for messages in its words.
   */
  asked: string;
}

export class Router {
  private readonly byName = new Map<string, Upstream>();
  private readonly local: Upstream | undefined;

  constructor(
    readonly upstreams: Upstream[],
    readonly defaultUpstream: Upstream,
    /** First path component of repositories that live only here (pushes), e.g. `local`. */
    readonly localNamespace?: string,
  ) {
    for (const u of upstreams) for (const n of u.names) this.byName.set(n.toLowerCase(), u);
    if (localNamespace) this.local = { name: localNamespace, names: [], libraryPrefix: false };
  }

  find(name: string): Upstream | undefined {
    return this.byName.get(name.toLowerCase());
  }

  /**
   * Routes a repository name from a request path, the way each client sends it:
   * containerd's `?ns=<registry>`, a `<registry>/` path prefix (podman and CRI-O mirrors), or
   * the default upstream (Docker's registry-mirrors), with `library/` for Docker Hub's official images.
   * Names an unconfigured registry? A clear error, and no connection is made anywhere.
   */
  route(pathName: string, ns?: string, mirrorHost?: string): Route {
    let upstream: Upstream | undefined;
    let repo = pathName;
    // The mirror's own address as the client used it, when it is one (the Host header is the client's).
    const host = mirrorHost && isValidRegistryHost(mirrorHost) ? mirrorHost : undefined;
    if (this.local && (ns === undefined || ns === '') && pathName.startsWith(`${this.local.name}/`)) {
      if (!isValidRepositoryName(pathName)) throw invalidName(pathName);
      return { upstream: this.local, repo: pathName, key: pathName, local: true, asked: pathName };
    }
    let asked: string | undefined;
    if (ns !== undefined && ns !== '') {
      upstream = this.find(ns);
      if (!upstream) throw this.unknownRegistry(ns);
      asked = `${ns}/${pathName}`;
    } else {
      const slash = pathName.indexOf('/');
      const first = slash > 0 ? pathName.slice(0, slash) : '';
      if (first && looksLikeRegistryHost(first)) {
        if (!isValidRegistryHost(first)) throw invalidName(pathName);
        upstream = this.find(first);
        if (!upstream) throw this.unknownRegistry(first);
        repo = pathName.slice(slash + 1);
        asked = pathName;
      } else {
        upstream = this.defaultUpstream;
        if (host) asked = `${host}/${pathName}`;
      }
    }
    if (!isValidRepositoryName(repo)) throw invalidName(repo);
    if (upstream.libraryPrefix && !repo.includes('/')) repo = `library/${repo}`;
    const key = `${upstream.name}/${repo}`;
    return { upstream, repo, key, local: false, asked: asked ?? key };
  }

  private unknownRegistry(name: string) {
    const configured = this.upstreams.map((u) => u.name).join(', ');
    return ociErrors.nameUnknown(`registry "${clip(name)}" is not mirrored here (this mirror's upstreams: ${configured})`, {
      registry: clip(name),
      upstreams: this.upstreams.map((u) => u.name),
    });
  }
}

function invalidName(name: string) {
  return ociErrors.nameInvalid(`invalid repository name "${clip(name)}": must match the distribution spec's name grammar`);
}

function clip(s: string): string {
  return s.length > 100 ? `${s.slice(0, 97)}...` : s;
}
