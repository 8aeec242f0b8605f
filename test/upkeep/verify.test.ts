// verify beside a running server: blobs committed while it reads the store are not reported as lost.
import { afterEach, beforeEach, expect, it } from 'vitest';
import { parseDigest } from '../../src/oci/digest.js';
import { verifyStore } from '../../src/upkeep/verify.js';
import { d, openTestStore, type TestStore } from './store.js';

let t: TestStore;
beforeEach(async () => {
  t = await openTestStore();
});
afterEach(() => t.close());

async function putRecorded(content: string): Promise<string> {
  const digest = d(content);
  const parsed = parseDigest(digest);
  if (!parsed.ok) throw new Error(parsed.reason);
  await t.store.put(parsed.digest, Buffer.from(content));
  t.catalogue.addBlob(digest, Buffer.byteLength(content));
  return digest;
}

it('a blob renamed into place and recorded while verify hashes the files is neither missing nor a problem', async () => {
  const before = await putRecorded('stored before verify began');
  // The server commits as a put-off flush does: rename first, then the row; here, in the middle of verify's walk.
  const entries = t.store.entries.bind(t.store);
  let late: string | undefined;
  t.store.entries = async function* () {
    for await (const entry of entries()) {
      yield entry;
      late ??= await putRecorded('committed during verify');
    }
  };
  const report = await verifyStore(t.store, t.catalogue);
  expect(late).toBeDefined();
  expect(t.catalogue.getBlob(late!)).toBeDefined();
  expect(report.problems).toEqual([]);
  expect(report.rowsChecked).toBe(1);
  expect(report.filesChecked).toBeGreaterThanOrEqual(1);
  expect(t.catalogue.getBlob(before)).toBeDefined();
});

it('still reports a recorded blob whose file is gone', async () => {
  const digest = await putRecorded('to be lost');
  const parsed = parseDigest(digest);
  if (!parsed.ok) throw new Error(parsed.reason);
  await t.store.delete(parsed.digest);
  const report = await verifyStore(t.store, t.catalogue);
  expect(report.problems).toEqual([{ kind: 'missing-file', digest, detail: 'blob is in the catalogue but not on disk' }]);
});
