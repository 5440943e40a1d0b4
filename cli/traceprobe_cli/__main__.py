"""`traceprobe map` and `traceprobe status`.

    traceprobe map                         # edges by traffic, as a table
    traceprobe map --ns shop -o dot        # filters as in the web view; DOT, Mermaid, JSON
    traceprobe map --watch                 # redraw every --interval
    traceprobe status                      # probes, nodes, and why anything is not Ready
    traceprobe --context prod -n traceprobe-system --map-service traceprobe-service-map map
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from traceprobe_api.resources import NODE_REPORTS, PROBE_PLURALS
from traceprobe_cli.render import OUTPUTS, render_map
from traceprobe_cli.status import STALE_AFTER_SECONDS, build_status, status_text
from traceprobe_map import views
from traceprobe_map.snapshot import MapSnapshot

DEFAULT_NAMESPACE = "traceprobe-system"
DEFAULT_SERVICE = "traceprobe-service-map"
MAP_PORT_NAME = "http"
CLEAR_SCREEN = "\x1b[H\x1b[2J"


class ClusterApi(Protocol):
    """What the commands need of `traceprobe_cli.kube.Cluster` (tests may pass a fake)."""

    def service_proxy_get(self, namespace: str, service: str, port: str, path: str,
                          params: dict[str, str] | None = None) -> bytes: ...

    def list_objects(self, plural: str) -> list[dict[str, Any]]: ...


class MapUnreadable(Exception):
    """The Service answered, but not with a map."""


def _connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    # Accepted before and after the subcommand, like kubectl's global flags; the
    # subcommand's copies default to SUPPRESS so they never undo the earlier value.
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--kubeconfig", default=default(None),
                        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    parser.add_argument("--context", default=default(None), help="kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=default(DEFAULT_NAMESPACE),
                        help=f"namespace of the service map (default {DEFAULT_NAMESPACE})")
    parser.add_argument("--map-service", default=default(DEFAULT_SERVICE),
                        help=f"Service of the service map (default {DEFAULT_SERVICE})")
    parser.add_argument("--request-timeout", type=float, default=default(10.0),
                        metavar="SECONDS", help="per request (default 10)")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="traceprobe", description="The traceprobe service map and probe health.",
        epilog="The map is read through the API server's service proxy: your user needs"
               " `get` on services/proxy in the service map's namespace.")
    _connection_options(main, defaults=True)
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    map_cmd = commands.add_parser("map", help="edges of the service map, busiest first")
    _connection_options(map_cmd, defaults=False)
    map_cmd.add_argument("--ns", action="append", default=[], metavar="NAMESPACE",
                         help="only edges touching this namespace (repeat, or comma-separate)")
    map_cmd.add_argument("--probe", help="only edges this probe saw (namespace/name, or name"
                                         " of a ClusterTraceProbe)")
    map_cmd.add_argument("--min-rate", type=float, default=0.0, metavar="PER_SECOND",
                         help="only edges with at least this many connection attempts/s")
    map_cmd.add_argument("--search", default="", help="only edges with an end matching this")
    map_cmd.add_argument("--window", help="time window, e.g. 30s or 5m (default: the map's)")
    map_cmd.add_argument("-o", "--output", choices=OUTPUTS, default="table")
    map_cmd.add_argument("-w", "--watch", action="store_true", help="redraw every --interval")
    map_cmd.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                         help="--watch refresh period (default 5)")

    status_cmd = commands.add_parser("status", help="probes and nodes, and why not Ready")
    _connection_options(status_cmd, defaults=False)
    status_cmd.add_argument("-o", "--output", choices=("table", "json"), default="table")
    status_cmd.add_argument("--stale-after", type=float, default=STALE_AFTER_SECONDS,
                            metavar="SECONDS",
                            help="a NodeReport heartbeat older than this is not Ready")
    return main


def _query(args: argparse.Namespace) -> views.MapQuery:
    params: dict[str, list[str]] = {"namespace": list(args.ns)}
    if args.probe:
        params["probe"] = [args.probe]
    if args.min_rate:
        params["minRate"] = [str(args.min_rate)]
    if args.search:
        params["search"] = [args.search]
    if args.window:
        params["window"] = [args.window]
    return views.parse_query(params)  # the server's own validation, before any request


def fetch_map(cluster: ClusterApi, args: argparse.Namespace,
              query: views.MapQuery) -> MapSnapshot:
    body = cluster.service_proxy_get(args.namespace, args.map_service, MAP_PORT_NAME,
                                     "api/map", query.as_params())
    try:
        return MapSnapshot.model_validate_json(body)
    except ValidationError as exc:  # e.g. --map-service names some other Service
        raise MapUnreadable(f"service {args.namespace}/{args.map_service} did not answer"
                            f" api/map with a service map: {exc.errors()[0]['msg']}") from exc


def run_map(cluster: ClusterApi, args: argparse.Namespace, out: Callable[[str], None],
            sleep: Callable[[float], None] = time.sleep, frames: int | None = None) -> int:
    query = _query(args)
    if not args.watch:
        out(render_map(fetch_map(cluster, args, query), args.output))
        return 0
    clear = CLEAR_SCREEN if sys.stdout.isatty() else ""
    shown = 0
    while frames is None or shown < frames:
        stamp = datetime.now().astimezone().strftime("%H:%M:%S")
        try:
            text = render_map(fetch_map(cluster, args, query), args.output)
        except Exception as exc:  # a blip while watching is shown, then retried
            text = f"error: {exc}\n"
        out(f"{clear}Every {args.interval:g}s: traceprobe map   {stamp}\n\n{text}\n")
        shown += 1
        if frames is None or shown < frames:
            sleep(args.interval)
    return 0


def run_status(cluster: ClusterApi, args: argparse.Namespace,
               out: Callable[[str], None]) -> int:
    from traceprobe_cli.kube import KubeError

    lists: dict[str, list[dict[str, Any]]] = {}
    errors: list[str] = []
    plurals = [*PROBE_PLURALS.values(), NODE_REPORTS]
    for plural in plurals:
        try:
            lists[plural] = cluster.list_objects(plural)
        except KubeError as exc:  # e.g. RBAC lets this user see some kinds only
            lists[plural] = []
            errors.append(str(exc))
    status = build_status(lists[PROBE_PLURALS["TraceProbe"]],
                          lists[PROBE_PLURALS["ClusterTraceProbe"]], lists[NODE_REPORTS],
                          stale_after=args.stale_after)
    if args.output == "json":
        out(json.dumps({**status.as_dict(), "errors": errors}, indent=2) + "\n")
    else:
        out(status_text(status, errors))
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()  # --watch frames must show up now, also through a pipe


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from traceprobe_cli.kube import Cluster, KubeError

    try:
        if args.command == "map":
            _query(args)  # refuse a bad filter before connecting anywhere
        cluster = Cluster(args.kubeconfig, args.context, timeout=args.request_timeout)
        if args.command == "map":
            return run_map(cluster, args, _write)
        return run_status(cluster, args, _write)
    except views.QueryError as exc:
        print(f"traceprobe: {exc}", file=sys.stderr)
        return 2
    except (KubeError, MapUnreadable) as exc:
        print(f"traceprobe: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
