// Vitest global setup: one Ceph RADOS Gateway (a real S3 server) per run, started before any test
// file and stopped after the last. Test files get its connection details with
// `inject('s3')` and build a client with `s3Client()` from ./s3.ts.
//
// Starting takes ~2.5 s here, so it is not skipped for runs that need no S3. If it fails, this
// throws with the reason (and the failing daemon's log tail): a missing Ceph must fail CI, not
// skip the S3 tests.
import type { TestProject } from 'vitest/node';
import { startRgw } from './ceph-rgw.js';
import type { S3Connection } from './s3.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The run's RADOS Gateway. */
    s3: S3Connection;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let rgw;
  try {
    rgw = await startRgw();
  } catch (e) {
    throw new Error(`global setup: could not start the test S3 server (Ceph RADOS Gateway): ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  project.provide('s3', {
    endpoint: rgw.endpoint,
    region: rgw.region,
    accessKeyId: rgw.accessKeyId,
    secretAccessKey: rgw.secretAccessKey,
  });
  return () => rgw.stop();
}
