# syntax=docker/dockerfile:1
# kube-front-proxy image: build with dev dependencies, ship only dist/ and runtime dependencies.
#   docker build -t kube-front-proxy .
#   docker run --rm kube-front-proxy --help

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:20-bookworm-slim
# Inside a container the admin listener (/healthz, /readyz, /metrics; plain HTTP) has to be
# reachable by probes from outside the container's loopback; --admin-listen still overrides it.
ENV NODE_ENV=production \
    KUBE_FRONT_PROXY_ADMIN_LISTEN=0.0.0.0:9443
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
# /pki and /users are where docker-compose.yml's `pki` service writes the demo PKI and users file: a
# named volume mounted there starts as a copy of the directory, so it is writable by the non-root user.
RUN mkdir -p /pki /users && chown 65532:65532 /pki /users
USER 65532:65532
EXPOSE 8443 9443
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9443/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["serve"]
