"""`traceprobe map` and `traceprobe status`.

    traceprobe map                         # edges by traffic, as a table
    traceprobe map --ns shop -o dot        # filters as in the web view; DOT, Mermaid, JSON
    traceprobe map --watch                 # redraw every --interval
    traceprobe status                      # probes, nodes, and why anything is not Ready
    traceprobe --context prod -n traceprobe-system --map-service traceprobe-service-map map
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from traceprobe_api.resources import NODE_REPORTS, PROBE_PLURALS
from traceprobe_cli.render import render_map
from traceprobe_cli.settings import CliSettings, UsageError, parse_args, parser
from traceprobe_cli.status import build_status, status_text
from traceprobe_map.snapshot import MapSnapshot

__all__ = ["main", "parse_args", "parser", "run_map", "run_status"]

MAP_PORT_NAME = "http"
CLEAR_SCREEN = "\x1b[H\x1b[2J"


class ClusterApi(Protocol):
    """What the commands need of `traceprobe_cli.kube.Cluster` (tests may pass a fake)."""

    def service_proxy_get(self, namespace: str, service: str, port: str, path: str,
                          params: dict[str, str] | None = None) -> bytes: ...

    def list_objects(self, plural: str) -> list[dict[str, Any]]: ...


class MapUnreadable(Exception):
    """The Service answered, but not with a map."""


def fetch_map(cluster: ClusterApi, settings: CliSettings) -> MapSnapshot:
    body = cluster.service_proxy_get(settings.namespace, settings.map_service, MAP_PORT_NAME,
                                     "api/map", settings.query().as_params())
    try:
        return MapSnapshot.model_validate_json(body)
    except ValidationError as exc:  # e.g. --map-service names some other Service
        raise MapUnreadable(
            f"service {settings.namespace}/{settings.map_service} did not answer api/map"
            f" with a service map ({exc.errors()[0]['msg']}); check --map-service and"
            " -n/--namespace") from exc


def run_map(cluster: ClusterApi, settings: CliSettings, out: Callable[[str], None],
            sleep: Callable[[float], None] = time.sleep, frames: int | None = None) -> int:
    if not settings.watch:
        out(render_map(fetch_map(cluster, settings), settings.output))
        return 0
    clear = CLEAR_SCREEN if sys.stdout.isatty() else ""
    shown = 0
    while frames is None or shown < frames:
        stamp = datetime.now().astimezone().strftime("%H:%M:%S")
        try:
            text = render_map(fetch_map(cluster, settings), settings.output)
        except Exception as exc:
            if shown == 0:  # nothing has worked yet: a setup problem, not a blip
                raise
            text = f"error: {exc}\n"  # a blip while watching is shown, then retried
        out(f"{clear}Every {settings.interval:g}s: traceprobe map   {stamp}\n\n{text}\n")
        shown += 1
        if frames is None or shown < frames:
            sleep(settings.interval)
    return 0


def run_status(cluster: ClusterApi, settings: CliSettings,
               out: Callable[[str], None]) -> int:
    # Every list must succeed: a failed one is an error (KubeError), never "none".
    lists = {plural: cluster.list_objects(plural)
             for plural in (*PROBE_PLURALS.values(), NODE_REPORTS)}
    status = build_status(lists[PROBE_PLURALS["TraceProbe"]],
                          lists[PROBE_PLURALS["ClusterTraceProbe"]], lists[NODE_REPORTS],
                          stale_after=settings.stale_after)
    if settings.output == "json":
        out(json.dumps(status.as_dict(), indent=2) + "\n")
    else:
        out(status_text(status))
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()  # --watch frames must show up now, also through a pipe


def _fail(message: str, code: int) -> int:
    print(f"traceprobe: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    # The kubernetes client logs some kubeconfig problems to the root logger as well as
    # raising them; the one line below says it, so nothing else reaches stderr.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        settings = parse_args(argv)
    except UsageError as exc:
        return _fail(str(exc), 2)
    from traceprobe_cli.kube import Cluster, KubeError  # the client loads slowly: not for -h

    try:
        cluster = Cluster.connect(settings)
        if settings.command == "map":
            return run_map(cluster, settings, _write)
        return run_status(cluster, settings, _write)
    except UsageError as exc:
        return _fail(str(exc), 2)
    except (KubeError, MapUnreadable) as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `traceprobe map | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
