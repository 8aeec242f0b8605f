import { describe, expect, it } from 'vitest';
import { OciError, ociErrors } from '../../src/oci/errors.js';
import { PlatformAllowList } from '../../src/oci/platform.js';
import { notMirroredError } from '../../src/mirror/not-mirrored.js';
import { digestOf } from '../../src/oci/digest.js';

// distribution-spec, "Error Codes": the only values allowed in errors[].code.
const SPEC_CODES = [
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
  'TOOMANYREQUESTS',
];

describe('OciError', () => {
  it('is an Error with status, code and message', () => {
    const e = new OciError(404, 'MANIFEST_UNKNOWN', 'no such manifest');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('OciError');
    expect(e.status).toBe(404);
    expect(e.code).toBe('MANIFEST_UNKNOWN');
    expect(e.message).toBe('no such manifest');
    expect(e.headers).toEqual({});
  });

  it('body() is {errors:[{code,message}]} without a detail key when there is none', () => {
    const body = new OciError(400, 'NAME_INVALID', 'bad name').body();
    expect(body).toEqual({ errors: [{ code: 'NAME_INVALID', message: 'bad name' }] });
    expect('detail' in body.errors[0]!).toBe(false);
  });

  it('body() carries the detail when given, even falsy values', () => {
    expect(new OciError(404, 'BLOB_UNKNOWN', 'm', { digest: 'x' }).body()).toEqual({
      errors: [{ code: 'BLOB_UNKNOWN', message: 'm', detail: { digest: 'x' } }],
    });
    expect(new OciError(404, 'BLOB_UNKNOWN', 'm', 0).body().errors[0]).toHaveProperty('detail', 0);
    expect(new OciError(404, 'BLOB_UNKNOWN', 'm', null).body().errors[0]).toHaveProperty('detail', null);
  });

  it('body() survives JSON round trip in the shape clients parse', () => {
    const parsed = JSON.parse(JSON.stringify(new OciError(403, 'DENIED', 'nope', { a: [1] }).body())) as unknown;
    expect(parsed).toEqual({ errors: [{ code: 'DENIED', message: 'nope', detail: { a: [1] } }] });
  });
});

describe('ociErrors factories', () => {
  // Call every factory with representative arguments, so a new factory must be added here too.
  const calls: Record<keyof typeof ociErrors, () => OciError> = {
    nameInvalid: () => ociErrors.nameInvalid('m'),
    nameUnknown: () => ociErrors.nameUnknown('m', { d: 1 }),
    digestInvalid: () => ociErrors.digestInvalid('m'),
    manifestUnknown: () => ociErrors.manifestUnknown('m'),
    manifestInvalid: () => ociErrors.manifestInvalid('m'),
    blobUnknown: () => ociErrors.blobUnknown('m'),
    denied: () => ociErrors.denied('m'),
    unsupported: () => ociErrors.unsupported('m'),
    tooLarge: () => ociErrors.tooLarge('m'),
    rangeInvalid: () => ociErrors.rangeInvalid('m', 10),
    unauthorized: () => ociErrors.unauthorized('m', 'Basic realm="mirror"'),
    tooManyRequests: () => ociErrors.tooManyRequests('m', '30'),
    upstream: () => ociErrors.upstream('m', 'BLOB_UNKNOWN'),
  };

  it('covers every factory', () => {
    expect(Object.keys(calls).sort()).toEqual(Object.keys(ociErrors).sort());
  });

  it.each(Object.entries(calls))('%s: an HTTP error status and one of the 14 spec codes', (_name, make) => {
    const e = make();
    expect(e).toBeInstanceOf(OciError);
    expect(SPEC_CODES).toContain(e.code);
    expect(Number.isInteger(e.status)).toBe(true);
    expect(e.status).toBeGreaterThanOrEqual(400);
    expect(e.status).toBeLessThan(600);
    expect(e.message).toBe('m');
    const body = e.body();
    expect(body.errors).toHaveLength(1);
    expect(SPEC_CODES).toContain(body.errors[0]!.code);
  });

  it('uses the status the spec pairs with each code', () => {
    expect([ociErrors.nameInvalid('m').status, ociErrors.nameInvalid('m').code]).toEqual([400, 'NAME_INVALID']);
    expect([ociErrors.nameUnknown('m').status, ociErrors.nameUnknown('m').code]).toEqual([404, 'NAME_UNKNOWN']);
    expect([ociErrors.digestInvalid('m').status, ociErrors.digestInvalid('m').code]).toEqual([400, 'DIGEST_INVALID']);
    expect([ociErrors.manifestUnknown('m').status, ociErrors.manifestUnknown('m').code]).toEqual([404, 'MANIFEST_UNKNOWN']);
    expect([ociErrors.manifestInvalid('m').status, ociErrors.manifestInvalid('m').code]).toEqual([400, 'MANIFEST_INVALID']);
    expect([ociErrors.blobUnknown('m').status, ociErrors.blobUnknown('m').code]).toEqual([404, 'BLOB_UNKNOWN']);
    expect([ociErrors.denied('m').status, ociErrors.denied('m').code]).toEqual([403, 'DENIED']);
    expect(ociErrors.unsupported('m').code).toBe('UNSUPPORTED');
    expect([ociErrors.tooLarge('m').status, ociErrors.tooLarge('m').code]).toEqual([413, 'SIZE_INVALID']);
    expect([ociErrors.unauthorized('m', 'x').status, ociErrors.unauthorized('m', 'x').code]).toEqual([401, 'UNAUTHORIZED']);
    expect([ociErrors.tooManyRequests('m').status, ociErrors.tooManyRequests('m').code]).toEqual([429, 'TOOMANYREQUESTS']);
  });

  it('passes details through', () => {
    expect(ociErrors.nameUnknown('m', { registry: 'x' }).detail).toEqual({ registry: 'x' });
    expect(ociErrors.blobUnknown('m', 'sha256:x').body().errors[0]!.detail).toBe('sha256:x');
  });

  it('401 carries the WWW-Authenticate challenge', () => {
    const challenge = 'Bearer realm="https://mirror/token",service="mirror"';
    expect(ociErrors.unauthorized('login', challenge).headers).toEqual({ 'WWW-Authenticate': challenge });
  });

  it('429 carries Retry-After when known, and no header otherwise', () => {
    expect(ociErrors.tooManyRequests('slow down', '120').headers).toEqual({ 'Retry-After': '120' });
    expect(ociErrors.tooManyRequests('slow down').headers).toEqual({});
  });

  it('416 carries Content-Range: bytes */size and the size', () => {
    const e = ociErrors.rangeInvalid('bad range', 1234);
    expect(e.status).toBe(416);
    expect(e.headers).toEqual({ 'Content-Range': 'bytes */1234' });
    expect(e.detail).toEqual({ size: 1234 });
  });

  it('upstream failures default to 502 and keep the resource code', () => {
    for (const code of ['MANIFEST_UNKNOWN', 'BLOB_UNKNOWN', 'NAME_UNKNOWN'] as const) {
      const e = ociErrors.upstream('upstream broke', code);
      expect(e.status).toBe(502);
      expect(e.code).toBe(code);
    }
    expect(ociErrors.upstream('m', 'BLOB_UNKNOWN', 504).status).toBe(504);
  });
});

describe('notMirroredError', () => {
  const allowList = PlatformAllowList.parse(['linux/amd64', 'linux/arm64']);
  const digest = digestOf(Buffer.from('s390x manifest'));

  it('for an index entry: 403 DENIED by default, naming platform, digest, index and what is carried', () => {
    const e = notMirroredError({
      platform: 'linux/s390x',
      digest,
      index: 'docker.io/library/alpine:3.20',
      allowList,
      response: 'denied',
    });
    expect(e).toBeInstanceOf(OciError);
    expect(e.status).toBe(403);
    expect(e.code).toBe('DENIED');
    expect(e.message).toContain('platform linux/s390x is not mirrored here');
    expect(e.message).toContain(allowList.describe());
    expect(e.message).toContain(`${digest} is the linux/s390x entry of index docker.io/library/alpine:3.20`);
    expect(e.detail).toEqual({
      platform: 'linux/s390x',
      digest,
      index: 'docker.io/library/alpine:3.20',
      mirroredPlatforms: ['linux/amd64', 'linux/arm64'],
    });
    expect(e.body().errors[0]).toMatchObject({ code: 'DENIED', message: e.message });
  });

  it("for a single-platform image: names the image, and 'not-found' gives 404 MANIFEST_UNKNOWN", () => {
    const e = notMirroredError({
      platform: 'linux/riscv64',
      digest,
      image: 'ghcr.io/org/app:v1',
      allowList,
      response: 'not-found',
    });
    expect(e.status).toBe(404);
    expect(e.code).toBe('MANIFEST_UNKNOWN');
    expect(e.message).toContain('platform linux/riscv64 is not mirrored here');
    expect(e.message).toContain('ghcr.io/org/app:v1 is a single-platform linux/riscv64 image');
    expect(e.message).not.toContain('entry of index');
    expect(e.detail).toEqual({
      platform: 'linux/riscv64',
      digest,
      image: 'ghcr.io/org/app:v1',
      mirroredPlatforms: ['linux/amd64', 'linux/arm64'],
    });
  });

  it('a single-platform image without a name falls back to its digest', () => {
    const e = notMirroredError({ platform: 'linux/arm/v7', digest, allowList, response: 'denied' });
    expect(e.status).toBe(403);
    expect(e.message).toContain(`${digest} is a single-platform linux/arm/v7 image`);
    expect(e.detail).toMatchObject({ image: digest });
    expect(e.detail).not.toHaveProperty('index');
  });

  it('an index case does not also carry an image key', () => {
    const e = notMirroredError({ platform: 'linux/s390x', digest, index: 'x/y:z', image: 'ignored', allowList, response: 'denied' });
    expect(e.detail).not.toHaveProperty('image');
  });

  it('lists the mirrored platforms as configured', () => {
    const list = PlatformAllowList.parse(['linux/arm64/v8', 'windows/amd64']);
    const e = notMirroredError({ platform: 'linux/386', digest, allowList: list, response: 'denied' });
    expect(e.message).toContain('this mirror carries linux/arm64/v8, windows/amd64');
    expect((e.detail as { mirroredPlatforms: string[] }).mirroredPlatforms).toEqual(['linux/arm64/v8', 'windows/amd64']);
  });
});
