"""`python -m traceprobe_map` and the Kubernetes API server, run as the real program:
kubeconfig files it cannot use refused by name (one line, exit 2); an API server that does
not answer said once and retried with backoff while the map serves; the retry delay's
doubling, cap and jitter."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.map_program import LOCAL, get_status, run, started
from harness.waiting import wait_until
from traceprobe_map.kube import LAST_RETRY_SECONDS, retry_backoff


def _kubeconfig(server: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "x",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}


KUBECONFIGS: list[tuple[str, bytes | None, str]] = [
    ("not-yaml", b"clusters: [unclosed\n", "not YAML"),
    ("a-string", b"hello world\n", "a YAML str"),
    ("a-list", b"- a\n- b\n", "a YAML list"),
    ("zero-bytes", b"", "empty"),
    ("binary", b"\x00\xff\xfe", "not UTF-8"),
    ("no-contexts", b"apiVersion: v1\nkind: Config\nclusters: []\n", "current-context"),
    ("server-not-url", yaml.safe_dump(_kubeconfig("localhost")).encode(), "not an https://"),
    ("missing", None, "no such file"),
]


@pytest.mark.parametrize(("content", "problem"), [c[1:] for c in KUBECONFIGS],
                         ids=[c[0] for c in KUBECONFIGS])
def test_an_unusable_kubeconfig_is_one_line_naming_the_file(
        tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "config"
    if content is not None:
        path.write_bytes(content)
    status, stderr = run(LOCAL, {"KUBECONFIG": str(path)})
    assert status == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert str(path) in stderr and problem in stderr, stderr


def test_an_unreachable_api_server_is_said_once_retried_with_backoff_and_the_map_serves(
        tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(_kubeconfig(f"https://127.0.0.1:{port}")))
    with started([*LOCAL, "--verbose"], {"KUBECONFIG": str(path)}) as (ready, lines):
        delays = re.compile(r"listing pods: API server still unreachable .* retrying in "
                            r"([\d.]+)s")

        def pods_retries() -> list[float]:
            found = [float(m[1]) for x in list(lines) if (m := delays.search(x))]
            return found if len(found) >= 3 else []

        seen = wait_until(pods_retries, timeout=40, what="three retries of the pod list")
        assert seen[0] < seen[1] < seen[2], seen  # doubling, jitter below a factor of 1.5
        said = [x for x in lines if "cannot reach the API server" in x]
        assert len(said) == 1 and f"https://127.0.0.1:{port}" in said[0], said
        assert "Connection refused" in said[0]
        assert get_status(ready["httpPort"], "/healthz") == 200
        assert get_status(ready["httpPort"], "/api/map") == 200


def test_retry_delay_doubles_up_to_its_cap_with_bounded_jitter() -> None:
    backoff = retry_backoff(lambda: 0.5)
    assert [backoff.failed() for _ in range(4)] == [1, 2, 4, 8]
    assert [backoff.failed() for _ in range(20)][-1] == LAST_RETRY_SECONDS
    backoff.succeeded()
    assert backoff.failed() == 1.0  # a success starts over
    assert retry_backoff(lambda: 0.0).failed() == 0.75
    assert retry_backoff(lambda: 1.0).failed() == 1.25
