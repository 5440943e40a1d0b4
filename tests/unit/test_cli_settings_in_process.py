"""The `traceprobe` CLI's settings object and commands, in process: flags win over the
environment and defaults fill the rest, map filters become the API query, combinations the
parser cannot make are refused, and a failed request is never shown as "none" (status
fails, watch fails on its first frame, a later failure is shown and watching goes on)."""

from __future__ import annotations

from typing import Any

import pytest

from traceprobe_cli import __main__ as cli
from traceprobe_cli.kube import KubeError
from traceprobe_cli.settings import CliSettings, UsageError, parse_args


def test_flags_win_over_the_environment_and_defaults_fill_the_rest() -> None:
    settings = parse_args(["--kubeconfig", "/a", "map", "-n", "tp"], {"KUBECONFIG": "/b"})
    assert settings.kubeconfig_source == ("--kubeconfig", "/a")
    assert (settings.namespace, settings.map_service, settings.request_timeout) == (
        "tp", "traceprobe-service-map", 10.0)
    assert parse_args(["status"], {"KUBECONFIG": "/b:/c"}).kubeconfig_source == (
        "KUBECONFIG", "/b:/c")
    assert parse_args(["status"], {}).kubeconfig_source is None
    assert (parse_args(["status"], {}).stale_after, parse_args(["map"], {}).interval) == (
        90.0, 5.0)


def test_map_filters_become_the_api_query() -> None:
    settings = parse_args(["map", "--ns", "shop,pay", "--ns", "ops", "--window", "1.5m",
                           "--min-rate", "0.5", "--probe", "shop/shop", "--search", "cart"], {})
    assert settings.query().as_params() == {
        "namespace": "ops,pay,shop", "probe": "shop/shop", "minRate": "0.5",
        "search": "cart", "window": "90s"}


@pytest.mark.parametrize("values, line", [
    ({"command": "status", "interval": 2}, "--interval '2' is not an option of"
                                           " `traceprobe status`"),
    ({"command": "map", "stale_after": 10}, "--stale-after '10' is not an option of"),
    ({"command": "map", "interval": 2, "watch": False}, "--interval '2' applies only with"),
    ({"command": "top"}, "COMMAND 'top': expected map or status"),
    ({}, "COMMAND is required"),
    ({"command": "map", "colour": "red"}, "'colour' is not a setting of traceprobe"),
])
def test_settings_object_refuses_combinations_the_parser_cannot_make(
        values: dict[str, Any], line: str) -> None:
    with pytest.raises(UsageError) as raised:
        CliSettings.load(values)
    assert line in str(raised.value)


class _Failing:
    """A cluster whose list of one kind fails, as with RBAC or an outage."""

    def __init__(self, failing: str) -> None:
        self.failing = failing

    def service_proxy_get(self, namespace: str, service: str, port: str, path: str,
                          params: dict[str, str] | None = None) -> bytes:
        raise KubeError("GET api/map: 503 Service Unavailable")

    def list_objects(self, plural: str) -> list[dict[str, Any]]:
        if plural == self.failing:
            raise KubeError(f"list {plural}.traceprobe.io: 403 Forbidden")
        return []


@pytest.mark.parametrize("plural", ["traceprobes", "clustertraceprobes", "nodereports"])
def test_status_fails_instead_of_showing_an_unread_list_as_empty(plural: str) -> None:
    out: list[str] = []
    with pytest.raises(KubeError, match=plural):
        cli.run_status(_Failing(plural), parse_args(["status"], {}), out.append)
    assert out == []


def test_watch_fails_when_its_first_frame_does_and_then_waits_whole_intervals() -> None:
    frames: list[str] = []
    naps: list[float] = []
    with pytest.raises(KubeError, match="503"):
        cli.run_map(_Failing(""), parse_args(["map", "--watch"], {}), frames.append,
                    sleep=naps.append, frames=3)
    assert frames == [] and naps == []


class _Blinking(_Failing):
    """A map that answers, then fails once, then answers again."""

    def __init__(self) -> None:
        super().__init__("")
        self.calls = 0

    def service_proxy_get(self, namespace: str, service: str, port: str, path: str,
                          params: dict[str, str] | None = None) -> bytes:
        self.calls += 1
        if self.calls == 2:
            return super().service_proxy_get(namespace, service, port, path, params)
        return b'{"cluster": "c", "generatedAt": "2025-01-01T00:00:00Z", "windowSeconds": 60,' \
               b' "nodes": [], "edges": []}'


def test_watch_shows_a_later_failure_and_goes_on() -> None:
    frames: list[str] = []
    naps: list[float] = []
    cli.run_map(_Blinking(), parse_args(["map", "--watch", "--interval", "1"], {}),
                frames.append, sleep=naps.append, frames=3)
    assert ["error: GET api/map: 503" in frame for frame in frames] == [False, True, False]
    assert naps == [1.0, 1.0]
