# One image for `caged api` and `caged worker`.
FROM node:24-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends tar zstd gzip pigz util-linux ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# The image has Node 24 already: the project's own Node (an optional dependency) is not needed.
RUN npm ci --omit=dev --no-audit --no-fund && rm -rf node_modules/node-linux-* node_modules/.bin/node
COPY bin ./bin
COPY src ./src
COPY templates ./templates
COPY tsconfig.json ./
ENV CAGED_DATA_DIR=/var/lib/caged
ENTRYPOINT ["node", "bin/caged.mjs"]
CMD ["api"]
