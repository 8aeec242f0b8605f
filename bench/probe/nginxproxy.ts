// Diagnostic, not a scenario: what a lean proxy costs on this machine. Scenario 3's cold skopeo
// pull, direct against nginx as a streaming reverse proxy (proxy_buffering off), nginx as a caching
// proxy (proxy_cache: it also writes every byte to a file, but neither hashes nor flushes it) and
// sparse-mirror, the order rotating each round.
//   SHAPE=3 ROUNDS=8 (scenario 3's shapes by number) node dist-bench/bench/probe/nginxproxy.js
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { skopeoCopy } from '../lib/clients.js';
import { SHAPES, shapeLayers } from '../lib/context.js';
import { pushSevenPlatformIndex } from '../lib/images.js';
import { startDistribution } from '../lib/registry.js';
import { startSparseMirror } from '../lib/mirror.js';
import { median } from '../lib/stats.js';
import { freePort, removeDir, startProc, stopAll, tempDir, removeAllTemp, waitForHttp } from '../lib/procs.js';

const shape = shapeLayers(SHAPES[Number(process.env.SHAPE ?? 3) - 1]!);
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
const hosts: Record<string, string> = { direct: upstream.host, stream: await nginx('stream'), cache: await nginx('cache'), sparse: mirror.host };
const work = tempDir('probe');
const ratios: Record<string, number[]> = { stream: [], cache: [], sparse: [] };
try {
  for (let r = 0; r < rounds; r++) {
    const img = await pushSevenPlatformIndex(upstream.url, `probe/n${r}`, 'v1', { bigPlatform: 'linux/amd64', bigLayers: shape, smallLayer: 262144 });
    const t: Record<string, number> = {};
    const order = ['direct', 'stream', 'cache', 'sparse'];
    for (let k = 0; k < r % 4; k++) order.push(order.shift()!);
    for (const who of order) {
      const res = await skopeoCopy(`docker://${hosts[who]}/${img.repo}:v1`, `dir:${join(work, who + r)}`, { os: 'linux', arch: 'amd64' });
      t[who] = res.ms;
      removeDir(join(work, who + r));
      await new Promise((res) => setTimeout(res, 100));
    }
    for (const k of Object.keys(ratios)) ratios[k]!.push(t[k]! / t.direct!);
    console.log(`round ${r}: ` + Object.entries(t).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', '));
  }
  console.log('median ÷ direct: ' + Object.entries(ratios).map(([k, v]) => `${k} ${median(v).toFixed(2)}`).join(', '));
} finally {
  await stopAll();
  removeAllTemp();
}
