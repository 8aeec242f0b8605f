// GET /v2/_catalog: the repositories the mirror holds, by the names clients pull them with,
// paginated with n/last and a Link header as distribution does; under the pull role.
import { describe, expect, it } from 'vitest';
import { useFixture } from '../support/fixture.js';
import { MANIFEST_ACCEPT, pushSinglePlatformImage } from '../support/images.js';

const PULL_TOKEN = `catalog-pull-${'x'.repeat(16)}`;
const REPOS = ['team/b', 'team/a', 'solo', 'team/c'];

const fx = useFixture({
  registry: true,
  images: async ({ registry }) => {
    for (const repo of [...REPOS, 'never/pulled']) await pushSinglePlatformImage(registry.url, repo, '1.0');
    return undefined;
  },
  mirror: ({ registry }) => ({ upstreams: [{ url: registry.url, aliases: ['up.test'] }] }),
});

async function get(url: string, init: RequestInit = {}) {
  const res = await fetch(url, init);
  return { status: res.status, headers: res.headers, body: await res.text() };
}

describe('GET /v2/_catalog', () => {
  it('lists the repositories the mirror holds, sorted, and none it never stored', async () => {
    const empty = await get(`${fx.mirror.url}/v2/_catalog`);
    expect(empty.status).toBe(200);
    expect(JSON.parse(empty.body)).toEqual({ repositories: [] });
    for (const repo of REPOS) {
      const r = await fetch(`${fx.mirror.url}/v2/up.test/${repo}/manifests/1.0`, { headers: { accept: MANIFEST_ACCEPT } });
      expect(r.status, await r.text()).toBe(200);
    }
    const all = await get(`${fx.mirror.url}/v2/_catalog`);
    expect(all.status).toBe(200);
    expect(all.headers.get('content-type')).toBe('application/json');
    expect(all.headers.get('link')).toBeNull();
    expect(JSON.parse(all.body)).toEqual({ repositories: ['up.test/solo', 'up.test/team/a', 'up.test/team/b', 'up.test/team/c'] });
    // The names listed are pullable as they are.
    const again = await fetch(`${fx.mirror.url}/v2/up.test/team/a/manifests/1.0`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
    expect(again.status).toBe(200);
  });

  it('pages with n and last, linking to the next page until the last one', async () => {
    const seen: string[] = [];
    let next: string | undefined = '/v2/_catalog?n=3';
    const links: string[] = [];
    while (next) {
      const page = await get(`${fx.mirror.url}${next}`);
      expect(page.status).toBe(200);
      const names = (JSON.parse(page.body) as { repositories: string[] }).repositories;
      expect(names.length).toBeLessThanOrEqual(3);
      seen.push(...names);
      const link = page.headers.get('link');
      if (link) links.push(link);
      next = link ? /^<([^>]+)>; rel="next"$/.exec(link)?.[1] : undefined;
    }
    expect(seen).toEqual(['up.test/solo', 'up.test/team/a', 'up.test/team/b', 'up.test/team/c']);
    expect(links).toEqual(['</v2/_catalog?n=3&last=up.test%2Fteam%2Fb>; rel="next"']);
    expect(JSON.parse((await get(`${fx.mirror.url}/v2/_catalog?last=up.test/team/a`)).body)).toEqual({ repositories: ['up.test/team/b', 'up.test/team/c'] });
    expect(JSON.parse((await get(`${fx.mirror.url}/v2/_catalog?n=0`)).body)).toEqual({ repositories: [] });
  });

  it('refuses a bad n with an OCI error, and methods other than GET and HEAD', async () => {
    for (const n of ['-1', 'abc', '1.5', '100000']) {
      const r = await get(`${fx.mirror.url}/v2/_catalog?n=${n}`);
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body).errors[0]).toMatchObject({ code: 'UNSUPPORTED', message: 'n must be a whole number from 0 to 10000' });
    }
    const post = await get(`${fx.mirror.url}/v2/_catalog`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    const head = await fetch(`${fx.mirror.url}/v2/_catalog`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get('content-length'))).toBeGreaterThan(0);
  });

  it('needs the pull role when auth is on', async () => {
    const m = await fx.startMirror({
      upstreams: [{ url: fx.registry.url, aliases: ['up.test'] }],
      auth: { enabled: true, tokens: [{ token: PULL_TOKEN, role: 'pull' }] },
    });
    const anonymous = await get(`${m.url}/v2/_catalog`);
    expect(anonymous.status).toBe(401);
    expect(JSON.parse(anonymous.body).errors[0].code).toBe('UNAUTHORIZED');
    const authorization = `Bearer ${PULL_TOKEN}`;
    expect((await fetch(`${m.url}/v2/up.test/solo/manifests/1.0`, { headers: { authorization, accept: MANIFEST_ACCEPT } })).status).toBe(200);
    const listed = await get(`${m.url}/v2/_catalog`, { headers: { authorization } });
    expect(listed.status).toBe(200);
    expect(JSON.parse(listed.body)).toEqual({ repositories: ['up.test/solo'] });
  });
});
