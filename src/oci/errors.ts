/** The 14 error codes the distribution spec allows in `errors[].code`. */
export type OciErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS';

export interface OciErrorBody {
  errors: Array<{ code: OciErrorCode; message: string; detail?: unknown }>;
}

/** An error that becomes an OCI error response: status, code, a message a person can act on. */
export class OciError extends Error {
  constructor(
    readonly status: number,
    readonly code: OciErrorCode,
    message: string,
    readonly detail?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'OciError';
  }

  body(): OciErrorBody {
    const entry: OciErrorBody['errors'][number] = { code: this.code, message: this.message };
    if (this.detail !== undefined) entry.detail = this.detail;
    return { errors: [entry] };
  }
}

export const ociErrors = {
  nameInvalid: (message: string) => new OciError(400, 'NAME_INVALID', message),
  nameUnknown: (message: string, detail?: unknown) => new OciError(404, 'NAME_UNKNOWN', message, detail),
  digestInvalid: (message: string, detail?: unknown) => new OciError(400, 'DIGEST_INVALID', message, detail),
  manifestUnknown: (message: string, detail?: unknown) => new OciError(404, 'MANIFEST_UNKNOWN', message, detail),
  manifestInvalid: (message: string, detail?: unknown) => new OciError(400, 'MANIFEST_INVALID', message, detail),
  blobUnknown: (message: string, detail?: unknown) => new OciError(404, 'BLOB_UNKNOWN', message, detail),
  denied: (message: string, detail?: unknown) => new OciError(403, 'DENIED', message, detail),
  unsupported: (message: string, detail?: unknown) => new OciError(405, 'UNSUPPORTED', message, detail),
  tooLarge: (message: string) => new OciError(413, 'SIZE_INVALID', message),
  rangeInvalid: (message: string, size: number) =>
    new OciError(416, 'BLOB_UNKNOWN', message, { size }, { 'Content-Range': `bytes */${size}` }),
  unauthorized: (message: string, challenge: string) =>
    new OciError(401, 'UNAUTHORIZED', message, undefined, { 'WWW-Authenticate': challenge }),
  tooManyRequests: (message: string, retryAfter?: string) =>
    new OciError(429, 'TOOMANYREQUESTS', message, undefined, retryAfter ? { 'Retry-After': retryAfter } : {}),
  /**
   * Upstream failed in a way the client cannot fix. 502 keeps it distinct from our own faults;
   * the code stays one of the spec's (the resource's "unknown" code), the message says why.
   */
  upstream: (message: string, code: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN' | 'NAME_UNKNOWN', status = 502) =>
    new OciError(status, code, message),
};
