# syntax=docker/dockerfile:1
# The traceprobe image: the operator (python -m traceprobe_operator, the default
# entry point), the service map (python -m traceprobe_map; the chart sets the
# command) and the CLI (traceprobe). Build from the repository root:
#
#   docker build -f images/traceprobe.Dockerfile -t ghcr.io/traceprobe/traceprobe:0.1.0 .
#
# Debian 12's python3 is 3.11, the package's minimum (requires-python >=3.11)
# and the interpreter the agent image must use for Debian's python3-bpfcc, so
# both images run the same Python.
ARG DEBIAN_IMAGE=debian:bookworm-slim

# --- 1. The map view's graph library, fetched from npm (pinned versions,
#        sha512 integrity checked by the script) into the package's web/vendor/.
FROM ${DEBIAN_IMAGE} AS web-assets
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates openssl npm \
    && rm -rf /var/lib/apt/lists/*
# The script also installs the browser its page tests drive when none is there;
# no test runs in this throw-away stage, so a stub stands in for it.
RUN ln -s /bin/true /usr/bin/chromium
WORKDIR /src
COPY scripts/fetch-web-assets.sh scripts/
RUN TRACEPROBE_CACHE=/tmp/cache scripts/fetch-web-assets.sh

# --- 2. The package and its dependencies, in a venv at its final path.
FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/traceprobe/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY operator/ operator/
COPY service_map/ service_map/
COPY cli/ cli/
COPY node_agent/ node_agent/
COPY --from=web-assets /src/service_map/traceprobe_map/web/vendor/ service_map/traceprobe_map/web/vendor/
RUN /opt/traceprobe/venv/bin/pip install --no-cache-dir . \
    && /opt/traceprobe/venv/bin/python -m compileall -q /opt/traceprobe/venv

# --- 3. Runtime: Debian's python3 and the venv, nothing else.
FROM ${DEBIAN_IMAGE}
# The uid the pods run as has a passwd entry: kopf names its peering identity after
# the user (getpass.getuser), which fails for a uid the image does not know.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 traceprobe \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin traceprobe
COPY --from=build /opt/traceprobe/venv /opt/traceprobe/venv
# `python` and `traceprobe` resolve to the venv. The root filesystem is read-only
# in the chart's pods: bytecode was compiled at build time, none is written.
ENV PATH=/opt/traceprobe/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Unprivileged; the chart's pods run as this uid (runAsUser 65532).
USER 65532:65532
ENTRYPOINT ["python", "-m", "traceprobe_operator"]
