export type UpstreamFailure =
  | 'not_found' // 404: authoritative, the content does not exist upstream
  | 'denied' // 401/403 even with the configured credentials
  | 'rate_limited' // 429
  | 'unavailable' // network error, timeout, 5xx: worth serving stale content for
  | 'too_large' // a manifest over the size limit: not mirrored, like an unknown one
  | 'bad_response'; // upstream answered something we refuse (wrong digest, malformed)

export class UpstreamError extends Error {
  constructor(
    readonly failure: UpstreamFailure,
    message: string,
    readonly status?: number,
    readonly retryAfter?: string,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

export function isUpstreamError(e: unknown, failure?: UpstreamFailure): e is UpstreamError {
  return e instanceof UpstreamError && (failure === undefined || e.failure === failure);
}
