"""A watch that goes silent is a hung watch: /healthz fails and says which; one that
keeps failing (an API server away) is alive, and the map stays healthy."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from traceprobe_map.http_api import MapApi
from traceprobe_map.kube import WatchHealth
from traceprobe_map.snapshot import MapSnapshot


class _Source:
    def snapshot(self, window_seconds: float | None = None) -> MapSnapshot:
        raise AssertionError("not asked")

    def probes(self) -> list[str]:
        return []


def test_a_silent_watch_fails_healthz_and_a_failing_one_does_not() -> None:
    now = [0.0]
    health = WatchHealth("https://api", clock=lambda: now[0])
    api = MapApi(_Source(), static={}, problem=health.problem)
    health.watching("pods")
    health.listed("services")
    now[0] = 600.0
    health.failed("services", OSError("connection refused"), 30.0)  # away, retrying: alive
    assert (api.get("/healthz").status, health.problem()) == (200, None)
    now[0] = 901.0
    reply = api.get("/healthz")
    assert reply.status == 503
    assert reply.body.decode() == ("unhealthy: watch of pods silent for more than 900s "
                                   "(no list, event or error): hung")
    health.watching("pods")  # an event: alive again
    health.failed("services", ApiException(status=403), 30.0)
    assert api.get("/healthz").status == 200 and api.get("/api/health").body == b"ok"
