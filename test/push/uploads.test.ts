// Blob uploads into the mirror over plain HTTP: chunked with the spec's 416 rules, resumed after a
// broken connection, verified at completion, cancelled, mounted, and expired when abandoned.
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestMirror, type TestMirror } from '../support/mirror.js';
import { PUSH_AUTH, bearer, brokenPatch, call, pushBlob, sha256 } from '../support/push-client.js';

const NO_UPSTREAM = [{ url: 'http://127.0.0.1:9' }];
let m: TestMirror;

async function uploadFiles(mirror: TestMirror): Promise<string[]> {
  return (await readdir(mirror.running.mirror.store.tmpDir).catch(() => [] as string[])).filter((f) => f.startsWith('upload-'));
}

async function start(repo = 'local/chunks'): Promise<URL> {
  const r = await call(m.url, 'POST', `/v2/${repo}/blobs/uploads/`);
  expect(r.status).toBe(202);
  expect(r.headers.get('range')).toBe('0-0');
  expect(r.headers.get('docker-upload-uuid')).toMatch(/^[0-9a-f-]{36}$/);
  expect(r.headers.get('location')).toBe(`/v2/${repo}/blobs/uploads/${r.headers.get('docker-upload-uuid')}`);
  return new URL(r.headers.get('location')!, m.url);
}

function patch(url: URL | string, body: Buffer, start: number | null, extra: Record<string, string> = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream', ...extra };
  if (start !== null) headers['content-range'] = `${start}-${start + body.length - 1}`;
  return call(m.url, 'PATCH', url.toString(), { body, headers });
}

function complete(url: URL | string, digest: string, body?: Buffer, headers: Record<string, string> = {}) {
  const u = new URL(url.toString());
  u.searchParams.set('digest', digest);
  return call(m.url, 'PUT', u.toString(), { body, headers });
}

beforeAll(async () => {
  m = await startTestMirror({ upstreams: NO_UPSTREAM, auth: PUSH_AUTH, push: { enabled: true } });
});
afterAll(async () => {
  expect(m.logs.filter((l) => l.includes('"level":"error"'))).toEqual([]);
  await m?.stop({ removeData: true });
});

describe('chunked upload', () => {
  it('resumes after a broken connection from the Range the status reports, and completes with the right digest', async () => {
    const data = randomBytes(300_000);
    const digest = sha256(data);
    const url = await start();

    const first = await patch(url, data.subarray(0, 100_000), 0);
    expect(first.status).toBe(202);
    expect(first.headers.get('range')).toBe('0-99999');
    expect(first.headers.get('location')).toBe(url.pathname);

    // The second chunk's connection breaks after 50 000 of its 200 000 bytes.
    await brokenPatch(url.toString(), { ...bearer(), 'content-range': '100000-299999' }, data.subarray(100_000), 50_000);

    const status = await call(m.url, 'GET', url.toString());
    expect(status.status).toBe(204);
    expect(status.headers.get('docker-upload-uuid')).toBe(url.pathname.split('/').pop());
    expect(status.headers.get('location')).toBe(url.pathname);
    const received = Number(/^0-(\d+)$/.exec(status.headers.get('range')!)![1]) + 1;
    expect(received).toBeGreaterThan(100_000);
    expect(received).toBeLessThanOrEqual(150_000);

    // Out of order (a retry of the whole second chunk) is refused with 416 and the current Range.
    const wrong = await patch(url, data.subarray(100_000), 100_000);
    expect(wrong.status).toBe(416);
    expect(wrong.errors?.[0]?.code).toBe('BLOB_UPLOAD_INVALID');
    expect(wrong.headers.get('range')).toBe(`0-${received - 1}`);
    expect(wrong.headers.get('location')).toBe(url.pathname);

    const rest = await patch(url, data.subarray(received), received);
    expect(rest.status).toBe(202);
    expect(rest.headers.get('range')).toBe('0-299999');

    const done = await complete(url, digest);
    expect(done.status).toBe(201);
    expect(done.headers.get('docker-content-digest')).toBe(digest);
    expect(done.headers.get('location')).toBe(`/v2/local/chunks/blobs/${digest}`);
    const got = await call(m.url, 'GET', `/v2/local/chunks/blobs/${digest}`);
    expect(got.status).toBe(200);
    expect(got.body.equals(data)).toBe(true);
    expect(await uploadFiles(m)).toEqual([]);
  });

  it('takes the last chunk with the completing PUT', async () => {
    const data = randomBytes(5000);
    const url = await start();
    expect((await patch(url, data.subarray(0, 3000), 0)).status).toBe(202);
    const done = await complete(url, sha256(data), data.subarray(3000), { 'content-range': '3000-4999' });
    expect(done.status).toBe(201);
    expect((await call(m.url, 'GET', `/v2/local/chunks/blobs/${sha256(data)}`)).body.equals(data)).toBe(true);
  });

  it('accepts streamed PATCHes without Content-Range (as skopeo sends them)', async () => {
    const data = randomBytes(70_000);
    const url = await start();
    expect((await patch(url, data.subarray(0, 20_000), null)).headers.get('range')).toBe('0-19999');
    expect((await patch(url, data.subarray(20_000), null)).headers.get('range')).toBe('0-69999');
    expect((await complete(url, sha256(data))).status).toBe(201);
  });

  it('answers 416 for a malformed Content-Range and for one that disagrees with Content-Length', async () => {
    const url = await start();
    const malformed = await call(m.url, 'PATCH', url.toString(), { body: Buffer.from('abc'), headers: { 'content-range': 'bytes */3' } });
    expect(malformed.status).toBe(416);
    expect(malformed.headers.get('range')).toBe('0-0');
    const mismatch = await call(m.url, 'PATCH', url.toString(), { body: Buffer.from('abc'), headers: { 'content-range': '0-9' } });
    expect(mismatch.status).toBe(416);
    expect(mismatch.errors?.[0]?.message).toContain('Content-Length is 3');
    // Nothing was written by the refused chunks.
    expect((await call(m.url, 'GET', url.toString())).headers.get('range')).toBe('0-0');
    await call(m.url, 'DELETE', url.toString());
  });

  it('a chunk starting past the data is out of order', async () => {
    const url = await start();
    const r = await patch(url, Buffer.from('late'), 10);
    expect(r.status).toBe(416);
    expect(r.errors?.[0]?.message).toContain('out of order');
    await call(m.url, 'DELETE', url.toString());
  });
});

describe('completion', () => {
  it('a wrong digest is 400 DIGEST_INVALID: nothing is stored and the upload is gone', async () => {
    const data = randomBytes(4000);
    const claimed = sha256(randomBytes(10));
    const url = await start();
    expect((await patch(url, data, 0)).status).toBe(202);
    const r = await complete(url, claimed);
    expect(r.status).toBe(400);
    expect(r.errors?.[0]?.code).toBe('DIGEST_INVALID');
    expect(r.errors?.[0]?.detail).toMatchObject({ expected: claimed, actual: sha256(data), size: 4000 });
    expect((await call(m.url, 'HEAD', `/v2/local/chunks/blobs/${claimed}`)).status).toBe(404);
    expect((await call(m.url, 'HEAD', `/v2/local/chunks/blobs/${sha256(data)}`)).status).toBe(404);
    expect((await call(m.url, 'GET', url.toString())).errors?.[0]?.code).toBe('BLOB_UPLOAD_UNKNOWN');
    expect(await uploadFiles(m)).toEqual([]);
  });

  it('a PUT without ?digest= is refused and the upload stays usable', async () => {
    const data = randomBytes(100);
    const url = await start();
    const r = await call(m.url, 'PUT', url.toString(), { body: data });
    expect(r.status).toBe(400);
    expect(r.errors?.[0]?.code).toBe('DIGEST_INVALID');
    expect((await call(m.url, 'GET', url.toString())).status).toBe(204);
    expect((await complete(url, 'sha256:nothex')).errors?.[0]?.code).toBe('DIGEST_INVALID');
    expect((await complete(url, sha256(data), data)).status).toBe(201);
  });

  it('monolithic: POST then PUT with the whole body; and a single POST ?digest=', async () => {
    const a = randomBytes(1000);
    expect(await pushBlob(m.url, 'local/mono', a)).toBe(sha256(a));
    const b = randomBytes(2000);
    const r = await call(m.url, 'POST', `/v2/local/mono/blobs/uploads/?digest=${sha256(b)}`, { body: b });
    expect(r.status).toBe(201);
    expect(r.headers.get('docker-content-digest')).toBe(sha256(b));
    const bad = await call(m.url, 'POST', `/v2/local/mono/blobs/uploads/?digest=${sha256(a)}`, { body: b });
    expect(bad.status).toBe(400);
    expect(bad.errors?.[0]?.code).toBe('DIGEST_INVALID');
    expect(await uploadFiles(m)).toEqual([]);
  });

  it('zero-byte blobs work', async () => {
    const empty = Buffer.alloc(0);
    expect(await pushBlob(m.url, 'local/mono', empty)).toBe(sha256(empty));
    const r = await call(m.url, 'HEAD', `/v2/local/mono/blobs/${sha256(empty)}`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-length')).toBe('0');
  });
});

describe('sessions', () => {
  it('DELETE cancels: 204, then the session is unknown and its data gone', async () => {
    const url = await start();
    await patch(url, randomBytes(500), 0);
    expect((await uploadFiles(m)).length).toBeGreaterThan(0);
    const r = await call(m.url, 'DELETE', url.toString());
    expect(r.status).toBe(204);
    const after = await call(m.url, 'GET', url.toString());
    expect(after.status).toBe(404);
    expect(after.errors?.[0]?.code).toBe('BLOB_UPLOAD_UNKNOWN');
    expect(await uploadFiles(m)).toEqual([]);
  });

  it('a session belongs to its repository; unknown and malformed ids are 404 BLOB_UPLOAD_UNKNOWN', async () => {
    const url = await start('local/one');
    const id = url.pathname.split('/').pop()!;
    expect((await call(m.url, 'GET', `/v2/local/other/blobs/uploads/${id}`)).errors?.[0]?.code).toBe('BLOB_UPLOAD_UNKNOWN');
    expect((await call(m.url, 'PATCH', `/v2/local/one/blobs/uploads/${id.replace(/.$/, '0')}x`)).status).toBe(404);
    expect((await call(m.url, 'PATCH', '/v2/local/one/blobs/uploads/not-a-session')).errors?.[0]?.code).toBe('BLOB_UPLOAD_UNKNOWN');
    await call(m.url, 'DELETE', url.toString());
  });

  it('cross-repository mount: 201 when the blob is in the store, otherwise a normal upload (202)', async () => {
    const data = randomBytes(3000);
    const digest = await pushBlob(m.url, 'local/source', data);
    const mounted = await call(m.url, 'POST', `/v2/local/target/blobs/uploads/?mount=${digest}&from=local/source`);
    expect(mounted.status).toBe(201);
    expect(mounted.headers.get('location')).toBe(`/v2/local/target/blobs/${digest}`);
    expect(mounted.headers.get('docker-content-digest')).toBe(digest);
    expect((await call(m.url, 'GET', `/v2/local/target/blobs/${digest}`)).body.equals(data)).toBe(true);

    const unknown = await call(m.url, 'POST', `/v2/local/target/blobs/uploads/?mount=${sha256(randomBytes(8))}&from=local/source`);
    expect(unknown.status).toBe(202);
    expect(unknown.headers.get('location')).toMatch(/^\/v2\/local\/target\/blobs\/uploads\/[0-9a-f-]{36}$/);
    const invalid = await call(m.url, 'POST', '/v2/local/target/blobs/uploads/?mount=sha256:zz&from=local/source');
    expect(invalid.status).toBe(202);
    for (const r of [unknown, invalid]) await call(m.url, 'DELETE', r.headers.get('location')!);
  });

  it('uploads need the push role', async () => {
    const anon = await call(m.url, 'POST', '/v2/local/x/blobs/uploads/', { token: null });
    expect(anon.status).toBe(401);
    const puller = await call(m.url, 'POST', '/v2/local/x/blobs/uploads/', { token: 'p'.repeat(32) });
    expect(puller.status).toBe(403);
    expect(puller.errors?.[0]?.code).toBe('DENIED');
  });
});

describe('abandoned uploads', () => {
  it('are removed, data and all, after push.uploadTimeoutSeconds idle', async () => {
    const short = await startTestMirror({ upstreams: NO_UPSTREAM, auth: PUSH_AUTH, push: { enabled: true, uploadTimeoutSeconds: 0.5 } });
    try {
      const started = await call(short.url, 'POST', '/v2/local/idle/blobs/uploads/');
      const url = new URL(started.headers.get('location')!, short.url);
      const chunk = await call(short.url, 'PATCH', url.toString(), { body: randomBytes(1000), headers: { 'content-range': '0-999' } });
      expect(chunk.status).toBe(202);
      expect((await uploadFiles(short)).length).toBe(1);
      // Activity keeps it alive...
      await new Promise((r) => setTimeout(r, 300));
      expect((await call(short.url, 'GET', url.toString())).status).toBe(204);
      await new Promise((r) => setTimeout(r, 300));
      expect((await call(short.url, 'GET', url.toString())).status).toBe(204);
      // ...idleness does not.
      await new Promise((r) => setTimeout(r, 1200));
      const gone = await call(short.url, 'GET', url.toString());
      expect(gone.status).toBe(404);
      expect(gone.errors?.[0]?.code).toBe('BLOB_UPLOAD_UNKNOWN');
      expect(gone.errors?.[0]?.message).toContain('expired after 0.5 s idle');
      expect(await uploadFiles(short)).toEqual([]);
      expect(short.logs.some((l) => l.includes('upload expired'))).toBe(true);
    } finally {
      await short.stop({ removeData: true });
    }
  });
});
