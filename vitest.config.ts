import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // One real S3 server (Ceph RADOS Gateway) for the whole run; see test/support/global-setup.ts.
    globalSetup: ['./test/support/global-setup.ts'],
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
