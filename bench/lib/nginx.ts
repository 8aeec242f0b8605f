// nginx serving a directory with sendfile: the practical ceiling for serving a cached file on this
// machine. Debian's defaults (worker_processes auto, sendfile on, tcp_nopush on), in the foreground.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, startProc, tempDir, waitForHttp, type Proc } from './procs.js';

export interface Nginx {
  url: string;
  proc: Proc;
  stop(): Promise<void>;
}

export async function startNginx(root: string, probePath: string): Promise<Nginx> {
  const work = tempDir('nginx');
  const port = await freePort();
  const conf = `
daemon off;
master_process on;
worker_processes auto;
user root;
pid ${work}/nginx.pid;
error_log ${work}/error.log warn;
events { worker_connections 1024; }
http {
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  types { }
  default_type application/octet-stream;
  access_log ${work}/access.log;
  client_body_temp_path ${work}/body;
  proxy_temp_path ${work}/proxy;
  fastcgi_temp_path ${work}/fastcgi;
  uwsgi_temp_path ${work}/uwsgi;
  scgi_temp_path ${work}/scgi;
  server {
    listen 127.0.0.1:${port};
    root ${root};
    location / { }
  }
}
`;
  const confPath = join(work, 'nginx.conf');
  await writeFile(confPath, conf);
  const proc = startProc('nginx', process.env.NGINX_BIN ?? 'nginx', ['-p', work, '-c', confPath, '-e', join(work, 'error.log')], {
    logFile: join(work, 'stdout.log'),
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/${probePath}`, { proc, timeoutMs: 10_000, method: 'HEAD' });
  return { url, proc, stop: () => proc.stop() };
}
