import type { UpstreamAnswer } from '../upstream/client.js';
import type { UpstreamFailure } from '../upstream/errors.js';

export interface UpstreamState {
  name: string;
  /** When it last answered usefully (2xx/3xx, or 404: it is up, the content is not there). */
  lastSuccess?: number;
  lastFailure?: { at: number; failure: UpstreamFailure; reason: string };
  /** Docker Hub's `ratelimit-remaining`: pulls left in the window (`76;w=21600` → 76, window 21600 s). */
  rateLimit?: { remaining: number; windowSeconds?: number; at: number };
}

/** Per upstream: when it last answered, when and why it last failed, its rate limit if it tells it. */
export class UpstreamHealth {
  private readonly states = new Map<string, UpstreamState>();

  constructor(names: string[]) {
    for (const name of names) this.states.set(name, { name });
  }

  answered(name: string, answer: UpstreamAnswer, at = Date.now()): void {
    const s = this.state(name);
    if (answer.status < 400 || answer.status === 404) s.lastSuccess = at;
    const limit = parseRateLimit(answer.rateLimitRemaining);
    if (limit) s.rateLimit = { ...limit, at };
  }

  failed(name: string, failure: UpstreamFailure, reason: string, at = Date.now()): void {
    // A manifest or tag that is not upstream is an answer, not a fault of the upstream.
    if (failure === 'not_found') return;
    this.state(name).lastFailure = { at, failure, reason };
  }

  list(): UpstreamState[] {
    return [...this.states.values()].map((s) => ({ ...s }));
  }

  private state(name: string): UpstreamState {
    let s = this.states.get(name);
    if (!s) this.states.set(name, (s = { name }));
    return s;
  }
}

/** `76;w=21600` (or a bare `76`) → its parts; undefined for anything else. */
export function parseRateLimit(value: string | undefined): { remaining: number; windowSeconds?: number } | undefined {
  const m = /^\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+))?/.exec(value ?? '');
  if (!m) return undefined;
  return { remaining: Number(m[1]), ...(m[2] ? { windowSeconds: Number(m[2]) } : {}) };
}
