"""`python -m traceprobe_agent`: the node agent.

--standalone runs without Kubernetes on any Linux host (root): it prints one
JSON connection record per line every interval, naming local processes by pid,
comm and cgroup path. Without it, the agent follows the TraceProbes that apply
to --node-name and reports to the cluster.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from traceprobe_agent.agent import Agent, AgentConfig, print_records
from traceprobe_agent.bcc_runtime import BpfUnavailable
from traceprobe_agent.features import probe_kernel
from traceprobe_api.probe import ALL_KINDS, DEFAULT_KINDS

log = logging.getLogger("traceprobe.agent")


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
                   help="/healthz and /metrics on 127.0.0.1 (0: pick one, -1: off)")
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
    features = probe_kernel(forced_missing=frozenset(args.disable_tracepoint))
    if not args.standalone:
        from traceprobe_agent.cluster_loop import run_in_cluster

        return run_in_cluster(args.node_name, features, args.interval, args.metrics_port,
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
    if args.metrics_port >= 0:
        from traceprobe_agent.health import serve

        server = serve(agent, args.metrics_port)
        log.info("health and metrics on http://127.0.0.1:%d/metrics", server.server_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(json.dumps({"ready": True, "programs": agent.program_ids()}), file=sys.stderr,
          flush=True)
    while not stop.wait(args.interval):
        agent.tick()
    agent.close()  # last interval's counts are flushed, programs detached
    return 0


if __name__ == "__main__":
    sys.exit(main())
