# syntax=docker/dockerfile:1
#
# Keybroker image: `docker build -t keybroker .`, then `docker run keybroker` (serve) or
# `docker run keybroker migrate`. Configuration comes only from the environment
# (src/config/config.ts); production refuses the local keyring and PGlite.
#
# Expected size: ~300-330 MB uncompressed, ~100 MB compressed. Estimate: no Docker engine was
# available where this was written. Parts: the node:24-slim base, ~200-230 MB (estimate); the
# production node_modules, 95 MB, and dist/, 1 MB (measured: same lockfile, --omit=dev). Of the
# 95 MB, tsx + esbuild (~12 MB) only run when dist/ is absent and PGlite (26 MB) only in
# development: moving tsx to devDependencies and loading PGlite lazily would drop both.
#
# Pin the base by digest in CI (node:24-slim@sha256:...) so a rebuild is reproducible.
ARG NODE_IMAGE=node:24-slim

# --- build: dev dependencies, TypeScript -> dist/ ------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations
RUN npm run build

# --- prod-deps: production dependencies only, exactly as locked ----------------------------
# --ignore-scripts: no package gets to run code at install time; none of the production
# dependencies needs an install script to work (checked by running the CLI from such a tree).
FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# --- runtime ---------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# npm and corepack are not needed to run the broker: less to patch and less to abuse.
# The broker's own user has a numeric id (Kubernetes runAsNonRoot can only verify numbers),
# no shell and no home directory.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
      /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
  && groupadd --system --gid 10001 keybroker \
  && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin keybroker
ENV NODE_ENV=production
# The commit the image is built from (docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD)),
# a label of the keybroker_build_info metric; left empty it reads "unknown".
ARG GIT_COMMIT=""
ENV KEYBROKER_GIT_COMMIT=${GIT_COMMIT}
WORKDIR /app
# Everything below stays owned by root and read-only to the broker, which writes nothing to
# disk: the image runs with a read-only root filesystem (writable /tmp only if mounted).
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY providers ./providers
COPY deploy/healthcheck.mjs ./deploy/healthcheck.mjs
USER 10001:10001
# gRPC (grpc.health.v1 and reflection included), Connect/gRPC-Web.
EXPOSE 50051 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "/app/deploy/healthcheck.mjs"]
ENTRYPOINT ["node", "bin/keybroker.js"]
CMD ["serve"]
