import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Whether work done on behalf of one client request sent anything to an upstream registry.
 * The request log names an upstream only for requests that reached one.
 */
const scope = new AsyncLocalStorage<{ contacted: boolean }>();

/** Runs `fn`; `contacted` is true when an upstream request (or token request) was sent meanwhile. */
export async function trackUpstreamContact<T>(fn: () => Promise<T>): Promise<{ value: T; contacted: boolean }> {
  const state = { contacted: false };
  try {
    const value = await scope.run(state, fn);
    return { value, contacted: state.contacted };
  } catch (e) {
    if (state.contacted && typeof e === 'object' && e !== null) (e as Record<symbol, unknown>)[CONTACTED] = true;
    throw e;
  }
}

const CONTACTED = Symbol('upstreamContacted');

/** Whether a request that failed with `e` had reached an upstream first. */
export function errorReachedUpstream(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[CONTACTED] === true;
}

/** Called by the upstream client just before it sends a request. */
export function noteUpstreamContact(): void {
  const state = scope.getStore();
  if (state) state.contacted = true;
}
