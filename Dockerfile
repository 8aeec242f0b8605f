# syntax=docker/dockerfile:1
# Build stage: compiles TypeScript, better-sqlite3's native addon and our sendfile addon
# (npm ci runs node-gyp for both), then drops dev dependencies.
# BASE: a Debian bookworm image with Node (>= 20.19) and a `node` user; the default is the official
# Node LTS image. A base that already has python3, make and g++ skips the apt-get step.
ARG BASE=node:24-bookworm-slim
FROM ${BASE} AS build
# npm's registry, if not the default (e.g. an internal mirror): --build-arg npm_config_registry=URL
ARG npm_config_registry
WORKDIR /app
RUN if command -v python3 && command -v make && command -v g++; then :; else \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 make g++ \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY package.json package-lock.json binding.gyp ./
COPY native ./native
RUN npm ci
COPY tsconfig.json mirror.config.ts ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

# Runtime stage: no compiler, runs as the unprivileged `node` user, store on a volume.
FROM ${BASE}
ENV NODE_ENV=production \
    MIRROR_HOST=0.0.0.0 \
    MIRROR_PORT=5000 \
    MIRROR_DATA=/data
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/build/Release/sendfile.node ./build/Release/sendfile.node
# The default config and the one file it imports (loaded at start-up by jiti).
COPY mirror.config.ts ./
COPY src/config/define.ts ./src/config/define.ts
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.MIRROR_PORT||5000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/src/cli.js"]
CMD ["serve"]
