# The workload image of the real-node tests: Debian + python3, so a test pod can
# serve (python3 -m http.server) and call (urllib) without more images; and
# PostgreSQL, Redis, their Python clients (Debian's psycopg2 and redis-py) and
# grpcio for the request tests. Built by
# scripts/node/build-images.sh with buildah from the debootstrapped base, the
# same way images/*.Dockerfile are meant to build (FROM debian:bookworm-slim,
# apt-get inside the build).
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 postgresql-15 redis-server \
       python3-psycopg2 python3-redis python3-grpcio \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /srv
CMD ["python3", "-m", "http.server", "8080"]
