# syntax=docker/dockerfile:1
#
# Keybroker image: `docker build -t keybroker .`, then `docker run keybroker` (serve) or
# `docker run keybroker migrate`. Configuration comes only from the environment
# (src/config/config.ts); production refuses the local keyring and PGlite.
#
# Expected size: ~260-290 MB uncompressed, ~90 MB compressed. Estimate: no Docker engine was
# available where this was written. Parts: the node slim base, ~200-230 MB (estimate); the
# production node_modules, ~70 MB, and dist/, 1 MB (measured: same lockfile, the prod-deps
# command below). tsx is a dev dependency and PGlite (26 MB) an optional one that this image
# leaves out: a broker here runs on Postgres and never imports it (src/store/database.ts).
#
# Node: the same release as development and CI (package.json `node` devDependency, engines;
# test/unit/deploy/node-version.test.ts keeps them equal). Pinned by version tag; Renovate
# (renovate.json) adds the digest: no registry could be reached to read it where this was written.
ARG NODE_IMAGE=node:26.10.0-slim

# --- build: dev dependencies, TypeScript -> dist/ ------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the compiler needs no install script, and the `node` devDependency's would
# fetch a second Node binary the base image already provides.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations
RUN npm run build

# --- prod-deps: production dependencies only, exactly as locked ----------------------------
# --ignore-scripts: no package gets to run code at install time; none of the production
# dependencies needs an install script to work (checked by running the CLI from such a tree).
# --omit=optional: leaves out PGlite and its dialect (development's embedded database) and pg's
# Cloudflare-only socket shim.
FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force

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
