/**
 * A repository pattern of a signature policy, matched against the mirror's repository key
 * (`ghcr.io/org/app`): `*` stands for one path component (or part of one), `**` for one or more
 * components at any depth. Case-insensitive, as registry host names are.
 */
export function compilePattern(pattern: string): (repository: string) => boolean {
  const source = pattern
    .toLowerCase()
    .split('/')
    .map((segment) => (segment === '**' ? '[^/]+(?:/[^/]+)*' : segment.split('*').map(escape).join('[^/]*')))
    .join('/');
  const re = new RegExp(`^${source}$`);
  return (repository) => re.test(repository.toLowerCase());
}

function escape(s: string): string {
  return s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}
