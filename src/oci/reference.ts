import { parseDigest } from './digest.js';

const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
/** distribution's limit on a repository name. */
export const MAX_NAME_LENGTH = 255;

/** A repository name per the distribution spec grammar. No `..`, no empty or absolute path parts. */
export function isValidRepositoryName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return false;
  return name.split('/').every((c) => COMPONENT.test(c));
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

const HOST_LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
const REGISTRY_HOST = new RegExp(`^(?:${HOST_LABEL}(?:\\.${HOST_LABEL})*|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]{1,5})?$`);

/** A registry host[:port] by Docker's reference grammar (DNS labels or a bracketed IPv6 address). */
export function isValidRegistryHost(host: string): boolean {
  return host.length <= 255 && REGISTRY_HOST.test(host);
}

/** A host[:port] as the first part of a reference, by Docker's rule: it has a dot or a port, or is localhost. */
export function looksLikeRegistryHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost';
}

export interface ImageReference {
  /** Registry host as written (`docker.io`, `ghcr.io`, `127.0.0.1:5000`), or undefined for the default. */
  registry?: string;
  repository: string;
  tag?: string;
  digest?: string;
}

/**
 * Parses `[registry/]repo[:tag][@digest]` as people write it on a command line. With neither tag
 * nor digest the tag is `latest`, as with docker and skopeo.
 */
export function parseImageReference(input: string): ImageReference {
  let rest = input.trim();
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    const d = parseDigest(digest);
    if (!d.ok) throw new Error(`${input}: ${d.reason}`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) throw new Error(`${input}: "${tag}" is not a valid tag`);
  }
  let registry: string | undefined;
  const firstSlash = rest.indexOf('/');
  if (firstSlash > 0 && looksLikeRegistryHost(rest.slice(0, firstSlash))) {
    registry = rest.slice(0, firstSlash);
    if (!isValidRegistryHost(registry)) throw new Error(`${input}: "${registry}" is not a valid registry host`);
    rest = rest.slice(firstSlash + 1);
  }
  if (!isValidRepositoryName(rest)) throw new Error(`${input}: "${rest}" is not a valid repository name`);
  if (!tag && !digest) tag = 'latest';
  return { registry, repository: rest, tag, digest };
}

export function formatReference(ref: ImageReference): string {
  const base = ref.registry ? `${ref.registry}/${ref.repository}` : ref.repository;
  return `${base}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}
