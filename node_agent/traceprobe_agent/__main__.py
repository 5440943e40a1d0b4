"""`python -m traceprobe_agent`: the node agent.

--standalone runs without Kubernetes on any Linux host (root): it prints one
JSON connection record per line every interval, naming local processes by pid,
comm and cgroup path. Without it, the agent follows the TraceProbes that apply
to --node-name and reports to the cluster.

Every flag and variable is checked before anything loads: bad input is one line
naming it, its value and what is allowed, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import NoReturn

from traceprobe_agent.agent import Agent, AgentConfig, print_records
from traceprobe_agent.bcc_runtime import BpfUnavailable
from traceprobe_agent.features import TRACEPOINTS, probe_kernel
from traceprobe_agent.health import STALL_SECONDS, Health
from traceprobe_agent.kernel_headers import KERNEL_SOURCE_ENV
from traceprobe_agent.listeners import open_listeners
from traceprobe_agent.program import BPF_DIR_ENV, CORES
from traceprobe_agent.settings import (
    MAP_ENDPOINT_ENV,
    NODE_NAME_ENV,
    PROG,
    AgentSettings,
    UsageError,
    from_inputs,
)
from traceprobe_api.probe import (
    ALL_KINDS,
    DEFAULT_KINDS,
    MAX_INTERVAL_SECONDS,
    MIN_INTERVAL_SECONDS,
)

log = logging.getLogger("traceprobe.agent")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage and a second line
        raise UsageError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    """The flags, each kept as typed (None when not given): AgentSettings checks them."""
    p = _Parser(prog=PROG, description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=f"environment: {NODE_NAME_ENV}, {MAP_ENDPOINT_ENV}, {BPF_DIR_ENV} (the "
                       f"BPF sources), {KERNEL_SOURCE_ENV} (a kernel header tree), KUBECONFIG")
    flag = p.add_argument
    flag("--standalone", action="store_true", default=None, help="run without Kubernetes")
    flag("--node-name", help=f"this node (default: ${NODE_NAME_ENV}, else the host name)")
    flag("--interval", dest="interval_seconds",
         help=f"seconds between reports, {MIN_INTERVAL_SECONDS}-{MAX_INTERVAL_SECONDS} "
              "(default 10; in a cluster until a probe sets its own)")
    flag("--probes", help=f"comma-separated, of {','.join(ALL_KINDS)} (standalone; default "
                          f"{','.join(DEFAULT_KINDS)})")
    flag("--max-connections", help="connections tracked at once, 1024-10000000 (standalone; "
                                    "default 65536)")
    flag("--metrics-port", help="/metrics, /livez and /readyz (= /healthz) on "
                                "--metrics-address (default 9464; 0: pick one, -1: off)")
    flag("--metrics-address",
         help="IP address /metrics listens on (default 127.0.0.1): loopback (127.0.0.1, ::1) "
              "serves plain HTTP to anyone on the node; any other (the node's IP, 0.0.0.0) "
              "serves HTTPS with a self-signed certificate and only to a bearer token the "
              "API server accepts (TokenReview) and allows `get` on /metrics "
              "(SubjectAccessReview); cluster mode only")
    flag("--health-port", help="also /livez and /readyz alone, plain HTTP on 127.0.0.1, for "
                               "the kubelet's exec probes (default -1: off; 0: pick one)")
    flag("--disable-tracepoint", dest="disabled_tracepoints", action="append",
         help=f"treat this tracepoint as missing (repeatable; of {', '.join(TRACEPOINTS)})")
    flag("--core", help=f"connection core: auto (default: sock_ops where its cgroup v2 "
                        f"programs load, else tracepoint), {' or '.join(CORES)}")
    flag("--cgroup-root", help="only report processes under this cgroup v2 path (one node's "
                               "subtree when several simulated nodes share a kernel)")
    flag("--map-endpoint", help=f"host:port of the service map's OTLP/gRPC ingest (cluster "
                                f"mode; default ${MAP_ENDPOINT_ENV})")
    flag("--map-ca-file", help="PEM CA bundle for TLS to the service map (default: plaintext "
                               "gRPC)")
    flag("--map-token-file", help="send this file's token (the pod's projected ServiceAccount "
                                  "token, read at each request) to the service map; needs "
                                  "--map-ca-file")
    flag("--print-records", action="store_true", default=None,
         help="also print records as JSON lines (always, without --map-endpoint)")
    flag("--verbose", action="store_true", default=None)
    return p


def parse(argv: Sequence[str] | None = None,
          environ: Mapping[str, str] | None = None) -> AgentSettings:
    """Settings from the command line and the environment, or UsageError."""
    return from_inputs(vars(_parser().parse_args(argv)), environ)


def _kubeconfig_problem(exc: Exception) -> str:
    """The loader's line (it names the file), with the variable that chose the file."""
    text, where = " ".join(str(exc).split()), os.environ.get("KUBECONFIG")
    named = "" if not where else "KUBECONFIG: " if where in text else f"KUBECONFIG {where!r}: "
    return f"{named}{text} (--standalone runs without Kubernetes)"


def _in_cluster(settings: AgentSettings) -> int:
    from traceprobe_agent.cluster_loop import run_in_cluster
    from traceprobe_agent.kube import KubeconfigError, NodeApi

    try:  # credentials first: a bad kubeconfig stops the agent before anything loads
        kube = NodeApi(settings.node_name)
    except KubeconfigError as exc:
        raise UsageError(_kubeconfig_problem(exc)) from None
    features = probe_kernel(forced_missing=settings.disabled_tracepoints)
    return run_in_cluster(settings, features, kube)


def _standalone(settings: AgentSettings) -> int:
    features = probe_kernel(forced_missing=settings.disabled_tracepoints)
    agent = Agent(settings.node_name, print_records, features, settings.cgroup_root,
                  core=settings.core)
    # Ready once the programs load; live while the loop goes round (a compile holds it).
    health = Health(agent, stall_seconds=STALL_SECONDS + 3 * settings.interval_seconds)
    open_listeners(settings, agent, health)
    try:
        plan = agent.apply(AgentConfig(settings.probes, settings.max_connections,
                                       settings.interval_seconds))
    except BpfUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # BCC's compile error is a bare Exception; its log is above
        print(f"{PROG}: could not load programs: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not plan.runnable:
        print(f"{PROG}: nothing can run: {plan.problem()}", file=sys.stderr)
        return 1
    if plan.problem():
        log.warning("degraded: %s", plan.problem())
    if agent.stats.core_reason:
        log.info("the %s core runs: %s", agent.stats.core, agent.stats.core_reason)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # One write, newline included (print() writes the end apart from the text).
    sys.stderr.write(json.dumps({"ready": True, "core": agent.stats.core,
                                 "programs": agent.program_ids()}) + "\n")
    sys.stderr.flush()
    while not stop.wait(settings.interval_seconds):
        agent.tick()
        health.beat()
    agent.close()  # last interval's counts are flushed, programs detached
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse(argv)
        logging.basicConfig(level=logging.DEBUG if settings.verbose else logging.INFO,
                            stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # urllib3 logs each of its retries; the agent says once what failed and when
        # it tries again.
        logging.getLogger("urllib3").setLevel(logging.DEBUG if settings.verbose
                                              else logging.ERROR)
        return _standalone(settings) if settings.standalone else _in_cluster(settings)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
