// The set-up most integration files share: upstreams (real distribution registries, a counting
// proxy, the fake upstream), fixture images pushed to them, and mirrors; all torn down at the end.
//
//   const fx = useFixture({
//     registry: true,
//     proxy: true,
//     images: async ({ registry }) => ({ app: await pushMultiPlatformImage(registry.url, 'library/app', '1.0') }),
//   });
//   it('…', async () => {
//     const m = await fx.startMirror({ upstreams: [{ url: fx.proxy.url }] });
//     … fx.images.app.digest …
//   });
//
// useFixture registers a beforeAll (in the describe block it is called in, or the file) that starts
// everything, and an afterAll that stops what the fixture started, last started first. Its
// fields are there once that beforeAll has run: read them in tests and hooks, not at describe
// time. A file's own beforeAll registered after useFixture runs after it and can use `fx`;
// one registered before it runs first (e.g. a token server a registry needs).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { startCountingProxy, type CountingProxy } from './counting-proxy.js';
import { startFakeUpstream, type FakeUpstream } from './fake-upstream.js';
import { startTestMirror, type TestMirror } from './mirror.js';
import { startRegistry, type RegistryHandle, type StartRegistryOptions } from './registry.js';

export type MirrorInput = Parameters<typeof startTestMirror>[0];

export interface FixtureOptions<I, K extends string> {
  /** One real registry, `fx.registry`: `true`, or the options to start it with. */
  registry?: true | StartRegistryOptions;
  /**
   * Named registries, `fx.registries.<name>`, started side by side. A function is called in the
   * beforeAll, for options only known then (a token server's address).
   */
  registries?: Record<K, StartRegistryOptions> | (() => Record<K, StartRegistryOptions>);
  /** A counting proxy in front of `fx.registry`: `fx.proxy`. */
  proxy?: boolean;
  /** The in-process fake upstream: `fx.fake`. */
  fake?: boolean;
  /** Pushes the fixture images once the upstreams are up; what it returns is `fx.images`. */
  images?: (fx: Upstreams<K>) => Promise<I>;
  /** A mirror started last, after the images: `fx.mirror`. */
  mirror?: (fx: Fixture<I, K>) => MirrorInput;
}

export interface Fixture<I = undefined, K extends string = never> {
  registry: RegistryHandle;
  registries: Record<K, RegistryHandle>;
  proxy: CountingProxy;
  fake: FakeUpstream;
  images: I;
  mirror: TestMirror;
  /** Every mirror the fixture started (`mirror` first, then those from startMirror), in order. */
  mirrors: TestMirror[];
  /** Starts a further mirror; it is stopped, and its store removed, at teardown. */
  startMirror(input: MirrorInput): Promise<TestMirror>;
  /** A fresh temporary directory, removed at teardown. */
  tempDir(prefix?: string): Promise<string>;
  /** Runs `fn` at teardown, in reverse order with everything else the fixture started. */
  defer(fn: () => unknown): void;
}

/** What the `images` callback sees: the upstreams, not yet the images or the mirror. */
export type Upstreams<K extends string> = Omit<Fixture<unknown, K>, 'images' | 'mirror'>;

export function useFixture<I = undefined, K extends string = never>(opts: FixtureOptions<I, K> = {}): Fixture<I, K> {
  const cleanups: Array<() => unknown> = [];
  const got: Partial<Pick<Fixture<I, K>, 'registry' | 'registries' | 'proxy' | 'fake' | 'mirror'>> & { images?: I } = {};
  let started = false;

  /** A field's value; a clear error if it is read too early or was not asked for. */
  function need<T>(name: string, value: T | undefined, option: string): T {
    if (!started) throw new Error(`fixture: fx.${name} read before the fixture's beforeAll ran`);
    if (value === undefined) throw new Error(`fixture: no fx.${name} (set ${option} in useFixture)`);
    return value;
  }

  const fx: Fixture<I, K> = {
    get registry() {
      return need('registry', got.registry, 'registry');
    },
    get registries() {
      return need('registries', got.registries, 'registries');
    },
    get proxy() {
      return need('proxy', got.proxy, 'proxy: true');
    },
    get fake() {
      return need('fake', got.fake, 'fake: true');
    },
    get images() {
      return need('images', got.images, 'images');
    },
    get mirror() {
      return need('mirror', got.mirror, 'mirror');
    },
    mirrors: [],
    async startMirror(input) {
      const m = await startTestMirror(input);
      fx.mirrors.push(m);
      cleanups.push(() => m.stop({ removeData: true }));
      return m;
    },
    async tempDir(prefix = 'sparse-mirror-test-') {
      const dir = await mkdtemp(join(tmpdir(), prefix));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      return dir;
    },
    defer(fn) {
      cleanups.push(fn);
    },
  };

  /** Starts something and queues its stop() for teardown. */
  async function track<T extends { stop(): Promise<void> }>(starting: Promise<T>): Promise<T> {
    const handle = await starting;
    cleanups.push(() => handle.stop());
    return handle;
  }

  beforeAll(async () => {
    const named = typeof opts.registries === 'function' ? opts.registries() : opts.registries;
    const registry = opts.registry ? track(startRegistry(opts.registry === true ? {} : opts.registry)) : undefined;
    const registries = Object.entries<StartRegistryOptions>(named ?? {}).map(([name, o]) => [name, track(startRegistry(o))] as const);
    const fake = opts.fake ? track(startFakeUpstream()) : undefined;
    // Wait for all before failing on one, so that whatever did start is queued for teardown.
    await Promise.allSettled([registry, fake, ...registries.map(([, r]) => r)]);
    got.registry = await registry;
    if (named) got.registries = Object.fromEntries(await Promise.all(registries.map(async ([n, r]) => [n, await r]))) as Record<K, RegistryHandle>;
    got.fake = await fake;
    if (opts.proxy) {
      if (!got.registry) throw new Error('fixture: proxy: true needs registry');
      got.proxy = await track(startCountingProxy(got.registry.url));
    }
    started = true;
    if (opts.images) got.images = await opts.images(fx);
    if (opts.mirror) got.mirror = await fx.startMirror(opts.mirror(fx));
  });

  afterAll(async () => {
    // Everything is stopped even if something fails to stop; the failures are thrown at the end.
    const errors: unknown[] = [];
    for (const cleanup of [...cleanups].reverse()) {
      try {
        await cleanup();
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length > 0) throw errors.length === 1 ? errors[0] : new AggregateError(errors, 'fixture teardown failed');
  });

  return fx;
}
