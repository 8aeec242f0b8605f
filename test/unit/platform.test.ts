import { describe, expect, it } from 'vitest';
import {
  formatPlatform,
  normalizePlatform,
  parsePlatform,
  PlatformAllowList,
  platformKey,
  samePlatform,
  type Platform,
} from '../../src/oci/platform.js';

function p(spec: string): Platform {
  const parsed = parsePlatform(spec);
  if (!parsed) throw new Error(`test setup: ${spec} does not parse`);
  return parsed;
}

describe('normalizePlatform (containerd platforms.Normalize)', () => {
  // Each row: what an image or operator may write → what containerd normalises it to.
  it.each([
    ['linux/amd64', 'linux/amd64'],
    ['linux/x86_64', 'linux/amd64'],
    ['linux/x86-64', 'linux/amd64'],
    ['linux/amd64/v1', 'linux/amd64'],
    ['linux/x86_64/v1', 'linux/amd64'],
    ['linux/amd64/v2', 'linux/amd64/v2'],
    ['linux/amd64/v3', 'linux/amd64/v3'],
    ['linux/aarch64', 'linux/arm64'],
    ['linux/arm64', 'linux/arm64'],
    ['linux/arm64/v8', 'linux/arm64'],
    ['linux/arm64/8', 'linux/arm64'],
    ['linux/arm64/v8.0', 'linux/arm64'],
    ['linux/aarch64/v8', 'linux/arm64'],
    ['linux/arm', 'linux/arm/v7'],
    ['linux/arm/7', 'linux/arm/v7'],
    ['linux/arm/v7', 'linux/arm/v7'],
    ['linux/arm/5', 'linux/arm/v5'],
    ['linux/arm/6', 'linux/arm/v6'],
    ['linux/arm/8', 'linux/arm/v8'],
    ['linux/arm/v6', 'linux/arm/v6'],
    ['linux/armhf', 'linux/arm/v7'],
    ['linux/armel', 'linux/arm/v6'],
    ['linux/i386', 'linux/386'],
    ['linux/386', 'linux/386'],
    ['linux/ppc64le', 'linux/ppc64le'],
    ['linux/s390x', 'linux/s390x'],
    ['linux/riscv64', 'linux/riscv64'],
    ['windows/amd64', 'windows/amd64'],
    ['macos/arm64', 'darwin/arm64'],
    ['LINUX/AMD64', 'linux/amd64'],
    ['Linux/AArch64/V8', 'linux/arm64'],
    ['linux/ARM', 'linux/arm/v7'],
  ])('%s → %s', (input, expected) => {
    expect(formatPlatform(normalizePlatform(p(input)))).toBe(expected);
    expect(platformKey(p(input))).toBe(expected);
  });

  it('drops any variant of i386 (containerd sets it to empty)', () => {
    expect(normalizePlatform({ os: 'linux', architecture: 'i386', variant: 'whatever' })).toEqual({ os: 'linux', architecture: '386' });
  });

  it('armhf and armel force their variant whatever was written', () => {
    expect(normalizePlatform({ os: 'linux', architecture: 'armhf', variant: 'v6' }).variant).toBe('v7');
    expect(normalizePlatform({ os: 'linux', architecture: 'armel', variant: 'v7' }).variant).toBe('v6');
  });

  it('leaves an unknown architecture and variant alone (lower-cased)', () => {
    expect(normalizePlatform({ os: 'linux', architecture: 'mips64le', variant: 'X' })).toEqual({
      os: 'linux',
      architecture: 'mips64le',
      variant: 'x',
    });
  });

  it('has no variant key at all when the variant normalises away', () => {
    const n = normalizePlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect('variant' in n).toBe(false);
    const e = normalizePlatform({ os: 'linux', architecture: 'amd64', variant: '' });
    expect('variant' in e).toBe(false);
  });

  it('is idempotent', () => {
    for (const spec of ['linux/x86_64', 'linux/aarch64/v8', 'linux/arm', 'linux/armel', 'linux/i386', 'macos/arm64', 'linux/arm/5']) {
      const once = normalizePlatform(p(spec));
      expect(normalizePlatform(once)).toEqual(once);
    }
  });

  it('does not modify its argument', () => {
    const input = { os: 'Linux', architecture: 'aarch64', variant: 'v8' };
    normalizePlatform(input);
    expect(input).toEqual({ os: 'Linux', architecture: 'aarch64', variant: 'v8' });
  });

  // containerd's normalizeArch also maps arm64 variants "9", "9.0" and "v9.0" to "v9"
  // (containerd/platforms database.go).
  it('arm64/9, arm64/9.0 and aarch64/v9.0 mean arm64/v9', () => {
    expect(platformKey(p('linux/arm64/9'))).toBe('linux/arm64/v9');
    expect(platformKey(p('linux/arm64/9.0'))).toBe('linux/arm64/v9');
    expect(platformKey(p('linux/aarch64/v9.0'))).toBe('linux/arm64/v9');
  });
});

describe('samePlatform', () => {
  it('compares after normalisation', () => {
    expect(samePlatform(p('linux/arm64/v8'), p('linux/arm64'))).toBe(true);
    expect(samePlatform(p('linux/arm'), p('linux/arm/v7'))).toBe(true);
    expect(samePlatform(p('linux/x86_64'), p('linux/amd64'))).toBe(true);
    expect(samePlatform(p('linux/armhf'), p('linux/arm/v7'))).toBe(true);
    expect(samePlatform(p('linux/armel'), p('linux/arm/v6'))).toBe(true);
    expect(samePlatform(p('linux/i386'), p('linux/386'))).toBe(true);
  });

  it('tells different platforms apart', () => {
    expect(samePlatform(p('linux/arm/v6'), p('linux/arm/v7'))).toBe(false);
    expect(samePlatform(p('linux/arm'), p('linux/arm64'))).toBe(false);
    expect(samePlatform(p('linux/amd64'), p('windows/amd64'))).toBe(false);
    expect(samePlatform(p('linux/amd64'), p('linux/amd64/v3'))).toBe(false);
    expect(samePlatform(p('linux/armel'), p('linux/armhf'))).toBe(false);
  });
});

describe('parsePlatform / formatPlatform', () => {
  it.each(['linux/amd64', 'linux/arm64/v8', 'linux/arm/v7', 'windows/amd64', 'linux/ppc64le', 'darwin/arm64', 'unknown/unknown', 'linux/x86_64'])(
    'round-trips %s',
    (spec) => {
      const parsed = parsePlatform(spec);
      expect(parsed).toBeDefined();
      expect(formatPlatform(parsed!)).toBe(spec);
    },
  );

  it('splits into os, architecture and variant, as written', () => {
    expect(parsePlatform('linux/arm/v7')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(parsePlatform('Linux/X86_64')).toEqual({ os: 'Linux', architecture: 'X86_64' });
    expect('variant' in parsePlatform('linux/amd64')!).toBe(false);
  });

  it('trims surrounding white space', () => {
    expect(parsePlatform('  linux/amd64 \n')).toEqual({ os: 'linux', architecture: 'amd64' });
  });

  it.each(['', 'linux', 'amd64', 'linux/', '/amd64', 'linux//amd64', 'linux/arm/', 'linux/arm/v7/extra', 'linux/ amd64', 'linux/amd 64', 'linux/amd64;', 'linux\\amd64', 'linux/arm64/v8/'])(
    'refuses %j',
    (spec) => {
      expect(parsePlatform(spec)).toBeUndefined();
    },
  );

  it('formats a platform without variant as os/arch and with one as os/arch/variant', () => {
    expect(formatPlatform({ os: 'linux', architecture: 'arm64' })).toBe('linux/arm64');
    expect(formatPlatform({ os: 'linux', architecture: 'arm64', variant: '' })).toBe('linux/arm64');
    expect(formatPlatform({ os: 'linux', architecture: 'arm', variant: 'v6' })).toBe('linux/arm/v6');
  });
});

describe('PlatformAllowList', () => {
  it('allows what it lists, whatever spelling the index uses', () => {
    const list = PlatformAllowList.parse(['linux/amd64', 'linux/arm64']);
    expect(list.allows({ os: 'linux', architecture: 'amd64' })).toBe(true);
    expect(list.allows({ os: 'linux', architecture: 'x86_64' })).toBe(true);
    expect(list.allows({ os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe(true);
    expect(list.allows({ os: 'linux', architecture: 'aarch64' })).toBe(true);
  });

  it('refuses what it does not list', () => {
    const list = PlatformAllowList.parse(['linux/amd64', 'linux/arm64']);
    expect(list.allows({ os: 'linux', architecture: 'arm', variant: 'v7' })).toBe(false);
    expect(list.allows({ os: 'linux', architecture: 's390x' })).toBe(false);
    expect(list.allows({ os: 'windows', architecture: 'amd64' })).toBe(false);
    expect(list.allows({ os: 'linux', architecture: 'amd64', variant: 'v3' })).toBe(false);
    expect(list.allows({ os: 'unknown', architecture: 'unknown' })).toBe(false);
  });

  it('normalises its own entries: linux/arm means arm/v7, not arm/v6', () => {
    const list = PlatformAllowList.parse(['linux/arm']);
    expect(list.allows({ os: 'linux', architecture: 'arm', variant: 'v7' })).toBe(true);
    expect(list.allows({ os: 'linux', architecture: 'armhf' })).toBe(true);
    expect(list.allows({ os: 'linux', architecture: 'arm', variant: 'v6' })).toBe(false);
    expect(list.allows({ os: 'linux', architecture: 'armel' })).toBe(false);
  });

  it('linux/arm64/v8 in the list matches an index entry without variant', () => {
    const list = PlatformAllowList.parse(['linux/arm64/v8']);
    expect(list.allows({ os: 'linux', architecture: 'arm64' })).toBe(true);
  });

  it('linux/i386 in the list matches 386', () => {
    expect(PlatformAllowList.parse(['linux/i386']).allows({ os: 'linux', architecture: '386' })).toBe(true);
  });

  it('describes the entries as the operator wrote them, in order', () => {
    expect(PlatformAllowList.parse(['linux/amd64', 'linux/arm64/v8', 'linux/ARM']).describe()).toBe('linux/amd64, linux/arm64/v8, linux/ARM');
    expect(new PlatformAllowList([{ os: 'linux', architecture: 'arm', variant: 'v6' }]).describe()).toBe('linux/arm/v6');
  });

  it('keeps the platforms it was given', () => {
    const list = PlatformAllowList.parse(['linux/amd64', 'linux/arm/v7']);
    expect(list.platforms).toEqual([
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
    ]);
  });

  it('parse throws naming the bad entry', () => {
    expect(() => PlatformAllowList.parse(['linux/amd64', 'amd64'])).toThrow(/"amd64" is not a platform/);
    expect(() => PlatformAllowList.parse(['linux/arm/v7/x'])).toThrow(/linux\/arm\/v7\/x/);
    expect(() => PlatformAllowList.parse([''])).toThrow(/not a platform/);
  });

  it('an empty list allows nothing', () => {
    const list = PlatformAllowList.parse([]);
    expect(list.allows({ os: 'linux', architecture: 'amd64' })).toBe(false);
    expect(list.describe()).toBe('');
  });
});
