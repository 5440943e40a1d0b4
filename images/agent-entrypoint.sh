#!/bin/sh
# Entry point of the traceprobe-agent image: picks kernel headers, then runs the agent.
#
# The agent looks for headers in this order (docs/design.md): BCC_KERNEL_SOURCE, then the
# host's /lib/modules/$(uname -r)/{build,source} (the DaemonSet mounts the host's
# /lib/modules and /usr/src, where those links point). When the host has none,
# this image's Debian header tree is the fallback. It comes before the kernel's
# /sys/kernel/kheaders.tar.xz because BCC unpacks that archive into /tmp, and
# the agent's root filesystem is read-only.
set -eu
release="$(uname -r)"
if [ -z "${BCC_KERNEL_SOURCE:-}" ] \
    && [ ! -d "/lib/modules/$release/build/include" ] \
    && [ ! -d "/lib/modules/$release/source/include" ]; then
    BCC_KERNEL_SOURCE=/opt/traceprobe/kernel-headers
    export BCC_KERNEL_SOURCE
fi
exec python -m traceprobe_agent "$@"
