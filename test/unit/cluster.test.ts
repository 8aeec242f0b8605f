import { describe, expect, it } from 'vitest';
import { Membership } from '../../src/cluster/members.js';
import { signPeerRequest, verifyPeerRequest } from '../../src/cluster/peer-auth.js';
import { ownerOf, rankMembers } from '../../src/cluster/ranking.js';

const replicas = (n: number) => Array.from({ length: n }, (_, i) => `http://10.0.0.${i + 1}:5000`);
const keys = Array.from({ length: 20_000 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);

function owners(members: string[]): Map<string, string> {
  return new Map(keys.map((k) => [k, ownerOf(k, members)!]));
}

describe('rendezvous ranking', () => {
  it('ranks every member once, the same whatever order the members are listed in', () => {
    const m = replicas(5);
    const r = rankMembers('sha256:abc', m);
    expect([...r].sort()).toEqual([...m].sort());
    expect(rankMembers('sha256:abc', [...m].reverse())).toEqual(r);
    expect(rankMembers('sha256:abc', [...m, m[0]!])).toEqual(r);
  });

  it('spreads keys evenly', () => {
    const counts = new Map<string, number>();
    for (const o of owners(replicas(4)).values()) counts.set(o, (counts.get(o) ?? 0) + 1);
    for (const c of counts.values()) expect(c / keys.length).toBeGreaterThan(0.22), expect(c / keys.length).toBeLessThan(0.28);
  });

  it('a member joining takes only its share, from every other member, and nothing else moves', () => {
    const before = owners(replicas(3));
    const after = owners(replicas(4));
    const joined = replicas(4)[3]!;
    let moved = 0;
    for (const k of keys) {
      if (before.get(k) === after.get(k)) continue;
      moved++;
      expect(after.get(k)).toBe(joined); // a key only ever moves to the newcomer
    }
    expect(moved / keys.length).toBeGreaterThan(0.22);
    expect(moved / keys.length).toBeLessThan(0.28);
  });

  it('a member leaving hands over only its own keys, each to the member ranked next for it', () => {
    const all = replicas(4);
    const gone = all[1]!;
    const before = owners(all);
    const rest = all.filter((m) => m !== gone);
    const after = owners(rest);
    for (const k of keys) {
      if (before.get(k) !== gone) expect(after.get(k)).toBe(before.get(k));
      else expect(after.get(k)).toBe(rankMembers(k, all)[1]);
    }
  });

  it('hash % n, for comparison, would move most keys when a member joins', () => {
    const mod = (k: string, n: number) => Number(BigInt(`0x${k.slice(-12)}`) % BigInt(n));
    const moved = keys.filter((k) => mod(k, 3) !== mod(k, 4)).length;
    expect(moved / keys.length).toBeGreaterThan(0.7);
  });
});

describe('peer request signatures', () => {
  const secret = 'correct horse battery staple';
  it('accepts its own signature for the same method and path', () => {
    expect(verifyPeerRequest(secret, 'GET', '/cluster/v1/blobs/x', signPeerRequest(secret, 'GET', '/cluster/v1/blobs/x'))).toEqual({ ok: true });
  });
  it('refuses no signature, a malformed one, another secret, another path or method, and an old one', () => {
    const now = Date.now();
    const sig = signPeerRequest(secret, 'GET', '/a', now);
    expect(verifyPeerRequest(secret, 'GET', '/a', undefined).ok).toBe(false);
    expect(verifyPeerRequest(secret, 'GET', '/a', 'not-a-signature').ok).toBe(false);
    expect(verifyPeerRequest('another secret entirely', 'GET', '/a', sig).ok).toBe(false);
    expect(verifyPeerRequest(secret, 'GET', '/b', sig).ok).toBe(false);
    expect(verifyPeerRequest(secret, 'HEAD', '/a', sig).ok).toBe(false);
    const old = verifyPeerRequest(secret, 'GET', '/a', signPeerRequest(secret, 'GET', '/a', now - 120_000), now);
    expect(old).toMatchObject({ ok: false, reason: expect.stringMatching(/expired/) });
  });
  it('never carries the secret itself', () => {
    expect(signPeerRequest(secret, 'GET', '/a')).not.toContain(secret);
  });
});

describe('Membership', () => {
  it('ranks over live members only, and takes a peer back once a probe finds it', async () => {
    const alive = new Set(['http://10.0.0.2:5000', 'http://10.0.0.3:5000']);
    const m = new Membership({ self: 'http://10.0.0.1:5000', peers: replicas(3), probe: async (p) => alive.has(p), probeIntervalMs: 1000 });
    await m.refresh();
    expect(m.live().sort()).toEqual(replicas(3));
    alive.delete('http://10.0.0.3:5000');
    await m.refresh();
    expect(m.live().sort()).toEqual(replicas(2));
    for (const k of keys.slice(0, 200)) expect(m.ranking(k)).not.toContain('http://10.0.0.3:5000');
    alive.add('http://10.0.0.3:5000');
    await m.refresh();
    expect(m.live()).toContain('http://10.0.0.3:5000');
    m.markDown('http://10.0.0.2:5000');
    m.markDown('http://10.0.0.1:5000'); // never itself
    expect(m.live().sort()).toEqual(['http://10.0.0.1:5000', 'http://10.0.0.3:5000']);
  });

  it('finds members through DNS at the advertised scheme and port, and keeps them when a lookup fails', async () => {
    let answer: string[] | Error = ['10.0.0.1', '10.0.0.7', 'fd00::9'];
    const m = new Membership({
      self: 'http://10.0.0.1:5000/',
      peers: [],
      dns: 'mirror-headless.default.svc',
      probe: async () => true,
      probeIntervalMs: 1000,
      resolve: async () => {
        if (answer instanceof Error) throw answer;
        return answer;
      },
    });
    await m.refresh();
    expect(m.members().sort()).toEqual(['http://10.0.0.1:5000', 'http://10.0.0.7:5000', 'http://[fd00::9]:5000']);
    answer = new Error('SERVFAIL');
    await m.refresh();
    expect(m.members()).toHaveLength(3);
  });
});
