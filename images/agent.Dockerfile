# syntax=docker/dockerfile:1
# The traceprobe-agent image: the node agent (python -m traceprobe_agent) with
# Debian's BCC (python3-bpfcc). Build from the repository root:
#
#   docker build -f images/agent.Dockerfile -t ghcr.io/traceprobe/traceprobe-agent:0.1.0 .
#
# The operator runs it as the agent DaemonSet (traceprobe_operator.agent_workload):
# not privileged, capabilities BPF, PERFMON, NET_ADMIN only (SYS_RESOURCE opt-in), the
# host's tracefs, cgroupfs and kernel headers mounted. Debian 12's python3
# (3.11, the package's minimum) is the one python3-bpfcc is built for.
ARG DEBIAN_IMAGE=debian:bookworm-slim

# --- 1. The package and its dependencies, in a venv at its final path that also
#        sees Debian's dist-packages: BCC's Python module comes from python3-bpfcc
#        (PyPI's `bcc` is an unrelated project).
FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv --system-site-packages /opt/traceprobe/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api/ api/
COPY operator/ operator/
COPY service_map/ service_map/
COPY cli/ cli/
COPY node_agent/ node_agent/
RUN /opt/traceprobe/venv/bin/pip install --no-cache-dir . \
    && /opt/traceprobe/venv/bin/python -m compileall -q /opt/traceprobe/venv

# --- 2. Kernel headers fallback: Debian's headers as one tree BCC can use through
#        BCC_KERNEL_SOURCE (the arch-specific part, then the common part over it;
#        the kbuild links are dropped, BCC does not run make). Headers of another
#        kernel version serve tracepoint-only programs, which read no kernel
#        structs. Installed here, so their build dependencies (gcc) stay out.
FROM ${DEBIAN_IMAGE} AS kernel-headers
RUN apt-get update \
    && apt-get install -y --no-install-recommends "linux-headers-$(dpkg --print-architecture)" \
    && mkdir -p /opt/traceprobe/kernel-headers \
    && cp -a /usr/src/linux-headers-*-"$(dpkg --print-architecture)"/. /opt/traceprobe/kernel-headers/ \
    && cp -a /usr/src/linux-headers-*-common/. /opt/traceprobe/kernel-headers/ \
    && rm -f /opt/traceprobe/kernel-headers/scripts /opt/traceprobe/kernel-headers/tools \
    && test -d /opt/traceprobe/kernel-headers/include/linux \
    && test -d /opt/traceprobe/kernel-headers/include/generated

# --- 3. Runtime.
FROM ${DEBIAN_IMAGE}
# python3-bpfcc: BCC and its LLVM; conntrack: Service NAT lookups (with NET_ADMIN);
# openssl: the self-signed certificate of /metrics beyond loopback, made at start
# (traceprobe_agent.metrics_auth). bash (Essential in Debian) runs the exec probes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-bpfcc conntrack openssl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/traceprobe/venv /opt/traceprobe/venv
COPY --from=kernel-headers /opt/traceprobe/kernel-headers /opt/traceprobe/kernel-headers
COPY images/agent-entrypoint.sh /usr/local/bin/traceprobe-agent
# The kernel programs' C sources: BCC compiles them on the node (TRACEPROBE_BPF_DIR).
COPY bpf/ /opt/traceprobe/bpf/
ENV TRACEPROBE_BPF_DIR=/opt/traceprobe/bpf \
    PATH=/opt/traceprobe/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Root in the container, with only the capabilities the DaemonSet adds: Linux
# grants a non-root process none of a container's added capabilities.
USER 0:0
ENTRYPOINT ["/usr/local/bin/traceprobe-agent"]
