import { defineConfig } from './src/config/define.js';

// The default configuration. Every key is checked at start-up; MIRROR_* environment variables
// override the main ones (see README). Credentials belong in the environment, not in this file.
export default defineConfig({
  host: '127.0.0.1',
  port: 5000,
  dataDir: 'data',
  offline: false,
  platforms: ['linux/amd64', 'linux/arm64'],
  upstreams: [
    {
      url: 'https://registry-1.docker.io',
      aliases: ['docker.io', 'index.docker.io'],
      username: process.env.DOCKERHUB_USERNAME,
      password: process.env.DOCKERHUB_PASSWORD,
    },
    { url: 'https://ghcr.io' },
    { url: 'https://quay.io' },
  ],
  defaultUpstream: 'docker.io',
  tags: { ttlSeconds: 300 },
  notMirroredResponse: 'denied',
  blobs: { requireReference: true },
  log: { level: 'info' },
});
