/** An OCI platform, as found in an index descriptor or an image config. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/**
 * Normalises a platform the way containerd's `platforms.Normalize` does, so an allow-list entry
 * `linux/arm64` matches an index entry `linux/arm64/v8`, and `linux/arm` means `linux/arm/v7`.
 */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase() === 'macos' ? 'darwin' : p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = (p.variant ?? '').toLowerCase();
  switch (architecture) {
    case 'i386':
      architecture = '386';
      variant = '';
      break;
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      architecture = 'amd64';
      if (variant === 'v1') variant = '';
      break;
    case 'aarch64':
    case 'arm64':
      architecture = 'arm64';
      if (variant === '8' || variant === 'v8' || variant === 'v8.0') variant = '';
      else if (variant === '9' || variant === '9.0' || variant === 'v9.0') variant = 'v9';
      break;
    case 'armhf':
      architecture = 'arm';
      variant = 'v7';
      break;
    case 'armel':
      architecture = 'arm';
      variant = 'v6';
      break;
    case 'arm':
      if (variant === '' || variant === '7') variant = 'v7';
      else if (/^[568]$/.test(variant)) variant = `v${variant}`;
      break;
  }
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** Parses `os/arch[/variant]`; returns undefined for anything else. */
export function parsePlatform(spec: string): Platform | undefined {
  const parts = spec.trim().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[A-Za-z0-9._-]+$/.test(p))) return undefined;
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return variant ? { os, architecture, variant } : { os, architecture };
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

export function platformKey(p: Platform): string {
  return formatPlatform(normalizePlatform(p));
}

export function samePlatform(a: Platform, b: Platform): boolean {
  return platformKey(a) === platformKey(b);
}

/** The allow-list: which platforms this mirror carries. */
export class PlatformAllowList {
  private readonly keys: Set<string>;

  constructor(readonly platforms: readonly Platform[]) {
    this.keys = new Set(platforms.map(platformKey));
  }

  static parse(specs: readonly string[]): PlatformAllowList {
    return new PlatformAllowList(
      specs.map((s) => {
        const p = parsePlatform(s);
        if (!p) throw new Error(`"${s}" is not a platform (expected os/arch or os/arch/variant)`);
        return p;
      }),
    );
  }

  allows(p: Platform): boolean {
    return this.keys.has(platformKey(p));
  }

  /** As the operator wrote them, for messages: `linux/amd64, linux/arm64`. */
  describe(): string {
    return this.platforms.map(formatPlatform).join(', ');
  }
}

/**
 * The platform an image config declares (its os, architecture and variant), or undefined when
 * it names none: artifacts such as signatures carry empty or no platform fields.
 */
export function platformOfImageConfig(bytes: Uint8Array): Platform | undefined {
  try {
    const c = JSON.parse(Buffer.from(bytes).toString('utf8')) as { os?: unknown; architecture?: unknown; variant?: unknown };
    if (typeof c.os !== 'string' || typeof c.architecture !== 'string' || !c.os || !c.architecture) return undefined;
    return typeof c.variant === 'string' && c.variant
      ? { os: c.os, architecture: c.architecture, variant: c.variant }
      : { os: c.os, architecture: c.architecture };
  } catch {
    return undefined;
  }
}
