"""`python -m traceprobe_agent`: the node agent.

--standalone runs without Kubernetes on any Linux host (root): it prints one
JSON connection record per line every interval, naming local processes by pid,
comm and cgroup path. Without it, the agent follows the TraceProbes that apply
to --node-name and reports to the cluster.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import sys
import threading

from traceprobe_agent.agent import Agent, AgentConfig, print_records
from traceprobe_agent.bcc_runtime import BpfUnavailable
from traceprobe_agent.features import probe_kernel
from traceprobe_agent.metrics_auth import is_loopback
from traceprobe_api.probe import ALL_KINDS, DEFAULT_KINDS

log = logging.getLogger("traceprobe.agent")


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="traceprobe-agent", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--standalone", action="store_true", help="run without Kubernetes")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME") or os.uname().nodename)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between reports")
    p.add_argument("--probes", default=",".join(DEFAULT_KINDS),
                   help=f"comma-separated, of {','.join(ALL_KINDS)} (standalone)")
    p.add_argument("--max-connections", type=int, default=65536)
    p.add_argument("--metrics-port", type=int, default=9464,
                   help="/metrics, /livez and /readyz (= /healthz) on --metrics-address "
                        "(0: pick one, -1: off)")
    p.add_argument("--metrics-address", type=_ip, default="127.0.0.1",
                   help="IP address /metrics listens on: loopback (127.0.0.1, ::1) serves "
                        "plain HTTP to anyone on the node; any other (the node's IP, "
                        "0.0.0.0) serves HTTPS with a self-signed certificate and only to "
                        "a bearer token the API server accepts (TokenReview) and allows "
                        "`get` on /metrics (SubjectAccessReview); cluster mode only")
    p.add_argument("--health-port", type=int, default=-1,
                   help="also /livez and /readyz alone, plain HTTP on 127.0.0.1, for the "
                        "kubelet's exec probes (0: pick one, -1: off)")
    p.add_argument("--disable-tracepoint", action="append", default=[],
                   help="treat this tracepoint as missing (category:event)")
    p.add_argument("--cgroup-root", default=None,
                   help="only report processes under this cgroup v2 path (one node's "
                        "subtree when several simulated nodes share a kernel)")
    p.add_argument("--map-endpoint", default=os.environ.get("TRACEPROBE_MAP_ENDPOINT"),
                   help="host:port of the service map's OTLP/gRPC ingest (cluster mode)")
    p.add_argument("--map-ca-file", default=None,
                   help="CA bundle for TLS to the service map (default: plaintext gRPC)")
    p.add_argument("--print-records", action="store_true",
                   help="also print records as JSON lines (always, without --map-endpoint)")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kinds = frozenset(k.strip() for k in args.probes.split(",") if k.strip())
    unknown = kinds - set(ALL_KINDS)
    if unknown:
        print(f"traceprobe-agent: unknown probe kind(s) {sorted(unknown)}; "
              f"use some of {','.join(ALL_KINDS)}", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print("traceprobe-agent: --interval must be > 0 seconds", file=sys.stderr)
        return 2
    if args.standalone and not is_loopback(args.metrics_address):
        print("traceprobe-agent: --metrics-address beyond loopback needs the API server to "
              "check scrapers' tokens; --standalone serves loopback only", file=sys.stderr)
        return 2
    features = probe_kernel(forced_missing=frozenset(args.disable_tracepoint))
    if not args.standalone:
        from traceprobe_agent.cluster_loop import Listeners, run_in_cluster

        return run_in_cluster(args.node_name, features, args.interval,
                              Listeners(args.metrics_address, args.metrics_port,
                                        args.health_port),
                              args.cgroup_root, args.map_endpoint, args.map_ca_file,
                              args.print_records)
    agent = Agent(args.node_name, print_records, features, args.cgroup_root)
    try:
        plan = agent.apply(AgentConfig(kinds, args.max_connections, args.interval))
    except BpfUnavailable as exc:
        print(f"traceprobe-agent: {exc}", file=sys.stderr)
        return 1
    if not plan.runnable:
        print(f"traceprobe-agent: nothing can run: {plan.problem()}", file=sys.stderr)
        return 1
    if plan.problem():
        log.warning("degraded: %s", plan.problem())
    from traceprobe_agent.health import STALL_SECONDS, Health, serve, serve_health, url

    health = Health(agent, stall_seconds=STALL_SECONDS + 3 * args.interval)
    if args.metrics_port >= 0:
        server = serve(agent, args.metrics_port, args.metrics_address, health=health)
        log.info("health and metrics on %s",
                 url("http", args.metrics_address, server.server_port, "/metrics"))
    if args.health_port >= 0:
        probes = serve_health(health, args.health_port)
        log.info("probes on %s", url("http", "127.0.0.1", probes.server_port, "/livez"))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(json.dumps({"ready": True, "programs": agent.program_ids()}), file=sys.stderr,
          flush=True)
    while not stop.wait(args.interval):
        agent.tick()
        health.beat()
    agent.close()  # last interval's counts are flushed, programs detached
    return 0


if __name__ == "__main__":
    sys.exit(main())
