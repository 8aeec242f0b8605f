import type { MirrorConfig } from './config/schema.js';
import { incrementalMarking } from './gc-tuning.js';
import { createApp } from './http/app.js';
import { Authenticator } from './http/auth.js';
import { Metrics } from './http/metrics.js';
import { createPushApi } from './push/routes.js';
import { sendfileStatus } from './http/sendfile.js';
import { listen, type RunningServer } from './http/server.js';
import { loadTls, watchTls } from './http/tls.js';
import type { Server as HttpsServer } from 'node:https';
import { createLogger, type Logger } from './log.js';
import { Maintenance } from './upkeep/maintenance.js';
import { Mirror } from './mirror/mirror.js';
import { createStatusPage } from './status/routes.js';
import { StatusService } from './status/status.js';
import { SignaturePolicies } from './signatures/policy.js';
import { signatureGate } from './signatures/gate.js';
import { watchSignatureKeys } from './signatures/reload.js';

export interface RunningMirror {
  mirror: Mirror;
  maintenance: Maintenance;
  metrics: Metrics;
  server: RunningServer;
  log: Logger;
  stop(): Promise<void>;
}

/** Opens the store, starts the HTTP server, and returns a handle that shuts both down cleanly. */
export async function startMirror(config: MirrorConfig, log: Logger = createLogger(config.log.level)): Promise<RunningMirror> {
  // Certificate problems stop start-up before the store is opened, naming the file.
  const tls = config.tls ? await loadTls(config.tls) : undefined;
  // So do signature keys: a missing or malformed key file is named before anything starts.
  const policies = SignaturePolicies.load(config.signatures);
  const metrics = new Metrics();
  const auth = config.auth.enabled ? await Authenticator.create(config.auth) : undefined;
  // The status page listens to the mirror's events; it needs the open mirror itself, hence the late binding.
  let status: StatusService | undefined;
  const statusEvents = StatusService.events(() => status);
  const mirror = await Mirror.open(config, log, {
    ...statusEvents,
    fetched: (route, bytes) => {
      metrics.upstreamBytes.inc({}, bytes);
      statusEvents.fetched?.(route, bytes);
    },
    upstreamFailure: (upstream, failure, reason) => {
      metrics.upstreamErrors.inc({ upstream, failure });
      statusEvents.upstreamFailure?.(upstream, failure, reason);
    },
    downloadStarted: () => incrementalMarking.streamStarted(),
    downloadEnded: () => incrementalMarking.streamEnded(),
  });
  status = new StatusService(mirror, log);
  incrementalMarking.streamsOnly(); // a server: marking back on whenever no blob streams through
  const pushApi = config.push.enabled ? createPushApi(mirror, config, log) : undefined;
  const signatures = policies.empty ? undefined : signatureGate(mirror, log, policies);
  const app = createApp({ mirror, log, metrics, auth, push: pushApi?.handler, status: createStatusPage(status), signatures });
  let server: RunningServer;
  try {
    server = await listen(app, config.host, config.port, tls);
  } catch (e) {
    await pushApi?.close();
    status.close();
    await mirror.close();
    throw e;
  }
  const unwatchTls = config.tls ? watchTls(server.server as unknown as HttpsServer, config.tls, log) : () => {};
  const unwatchKeys = signatures ? watchSignatureKeys(signatures, config.signatures, log) : () => {};
  const sendfile = sendfileStatus();
  log.info('sparse-mirror listening', {
    url: server.url,
    dataDir: config.dataDir,
    platforms: config.platforms,
    upstreams: mirror.router.upstreams.map((u) => u.name),
    default: mirror.router.defaultUpstream.name,
    offline: config.offline,
    tls: config.tls ? { cert: config.tls.cert, clientCA: config.tls.clientCA ?? false } : false,
    sendfile: config.blobs.sendfile ? sendfile.available : 'off',
    shared: config.storage.s3 ? { bucket: config.storage.s3.bucket, endpoint: config.storage.s3.endpoint ?? 'AWS S3', prefix: config.storage.s3.prefix } : false,
    replicas: mirror.shared?.peers ? { self: mirror.shared.peers.membership.selfUrl, known: mirror.shared.peers.membership.members() } : false,
  });
  if (config.blobs.sendfile && !sendfile.available) {
    log.warn('blobs are served through user space (slower): sendfile is unavailable', { reason: sendfile.reason });
  }
  // Uploads an earlier run left queued, and the other replicas' liveness from now on.
  mirror.shared?.uploads.start();
  mirror.shared?.peers?.membership.start();
  const maintenance = new Maintenance(mirror, config, log);
  maintenance.start();
  let stopping: Promise<void> | undefined;
  return {
    mirror,
    maintenance,
    metrics,
    server,
    log,
    stop: () =>
      (stopping ??= (async () => {
        // Stop accepting, let downloads in flight finish into the store, then close SQLite.
        unwatchTls();
        unwatchKeys();
        const closed = server.close();
        await maintenance.stop();
        await pushApi?.close();
        // Its history is written before SQLite closes (bytes of downloads still finishing are not counted).
        status?.close();
        await mirror.close();
        server.server.closeAllConnections();
        await closed;
      })()),
  };
}
