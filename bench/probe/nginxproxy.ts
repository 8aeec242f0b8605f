// Diagnostic, not a scenario: what a lean proxy costs on this machine. Scenario 3's cold skopeo
// pull, direct against nginx as a streaming reverse proxy (proxy_buffering off), nginx as a caching
// proxy (proxy_cache: it also writes every byte to a file, but neither hashes nor flushes it) and
// sparse-mirror, the order rotating each round (pull-rounds.ts).
//   SHAPE=3 ROUNDS=8 (scenario 3's shapes by number) node dist-bench/bench/probe/nginxproxy.js
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { SHAPES, shapeLayers } from '../lib/context.js';
import { startDistribution } from '../lib/registry.js';
import { startSparseMirror } from '../lib/mirror.js';
import { freePort, startProc, stopAll, tempDir, removeAllTemp, waitForHttp } from '../lib/procs.js';
import { pullRounds } from './pull-rounds.js';

const shape = process.env.SHAPE ?? '3';
const layers = shapeLayers(SHAPES[Number(shape) - 1]!);
const rounds = Number(process.env.ROUNDS ?? 6);
const upstream = await startDistribution('upstream');
const mirror = await startSparseMirror('main', { upstream: upstream.url });
async function nginx(mode: 'stream' | 'cache'): Promise<string> {
  const work = tempDir('ngx');
  const port = await freePort();
  mkdirSync(join(work, 'cache'));
  const proxy = mode === 'stream' ? 'proxy_buffering off;' : `proxy_buffering on; proxy_cache c; proxy_cache_valid 200 1h; proxy_max_temp_file_size 0;`;
  writeFileSync(join(work, 'nginx.conf'), `daemon off; master_process on; worker_processes auto; user root; pid ${work}/nginx.pid; error_log ${work}/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path ${work}/body; proxy_temp_path ${work}/proxy; fastcgi_temp_path ${work}/f; uwsgi_temp_path ${work}/u; scgi_temp_path ${work}/s;
  proxy_cache_path ${work}/cache keys_zone=c:10m;
  upstream up { server ${upstream.host}; keepalive 16; }
  server { listen 127.0.0.1:${port}; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $http_host; ${proxy} } } }
`);
  const proc = startProc('nginx', 'nginx', ['-p', work, '-c', join(work, 'nginx.conf'), '-e', join(work, 'error.log')], { logFile: join(work, 'out.log') });
  await waitForHttp(`http://127.0.0.1:${port}/v2/`, { proc, timeoutMs: 10_000 });
  return `127.0.0.1:${port}`;
}
try {
  const proxies = [
    { name: 'stream', host: await nginx('stream') },
    { name: 'cache', host: await nginx('cache') },
    { name: 'sparse', host: mirror.host, pid: mirror.proc.pid },
  ];
  await pullRounds(upstream, proxies, layers, rounds, `shape-${shape}`);
} finally {
  await stopAll();
  removeAllTemp();
}
