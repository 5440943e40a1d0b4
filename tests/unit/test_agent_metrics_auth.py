"""The agent's probes and /metrics listeners (traceprobe_agent.health) and the token
checks of /metrics beyond loopback (traceprobe_agent.metrics_auth), with a fake
API server for the reviews (tests/cluster/test_agent_metrics_scrape.py uses the real
one), real sockets, real TLS and the exact exec probe the operator renders."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from harness.metrics import samples
from harness.tools import REPO
from traceprobe_agent.agent import Agent
from traceprobe_agent.features import KernelFeatures
from traceprobe_agent.health import Health, serve, serve_health
from traceprobe_agent.metrics_auth import MetricsAuth, is_loopback, self_signed_context
from traceprobe_agent.program import plan_program
from traceprobe_api.token_cache import bearer_token
from traceprobe_operator.agent_workload import health_check

READER: dict[str, Any] = {"username": "system:serviceaccount:monitoring:prometheus", "uid": "u-1",
          "groups": ["system:serviceaccounts"], "extra": {"authentication.kubernetes.io/x":
                                                          ["y"]}}
STRANGER: dict[str, Any] = {"username": "system:serviceaccount:shop:web", "groups": []}


class FakeReviews:
    """What the API server would answer; counts the reviews asked of it."""

    def __init__(self) -> None:
        self.users = {"reader-token": READER, "stranger-token": STRANGER}
        self.allowed = {READER["username"]}
        self.calls: list[tuple[str, Any]] = []
        self.away = False

    def review_token(self, token: str) -> dict[str, Any] | None:
        self.calls.append(("token", token))
        if self.away:
            raise ConnectionRefusedError("API server away")
        return self.users.get(token)

    def may(self, user: dict[str, Any], verb: str, path: str) -> bool:
        self.calls.append(("may", (user["username"], verb, path)))
        return user["username"] in self.allowed and (verb, path) == ("get", "/metrics")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bearer_tokens_are_read_from_the_authorization_header() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic YWxhZGRpbjpvcGVu") is None
    assert bearer_token("Bearer ") is None and bearer_token(None) is None


def test_loopback_is_127_0_0_0_8_and_ipv6_one() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
    assert not is_loopback("10.244.0.1") and not is_loopback("fd00::1")


def test_decisions_401_403_200_and_503() -> None:
    reviews = FakeReviews()
    auth = MetricsAuth(reviews)
    assert auth.check(None).status == 401
    assert auth.check("Basic x").status == 401
    assert auth.check("Bearer forged").status == 401
    denied = auth.check("Bearer stranger-token")
    assert denied.status == 403 and "system:serviceaccount:shop:web may not get /metrics" in (
        denied.reason)
    assert auth.check("Bearer reader-token").status == 200
    # The reader's identity is passed on whole: user, uid, groups (extra for the SAR too).
    assert ("may", (READER["username"], "get", "/metrics")) in reviews.calls
    reviews.away = True
    assert auth.check("Bearer other-token").status == 503


def test_decisions_are_cached_briefly_per_token_and_failures_not_at_all() -> None:
    reviews, clock = FakeReviews(), Clock()
    auth = MetricsAuth(reviews, ttl_seconds=10, clock=clock)
    for _ in range(5):
        assert auth.check("Bearer reader-token").status == 200
        assert auth.check("Bearer stranger-token").status == 403
    assert auth.reviews_made == 2
    clock.now += 11  # RBAC may have changed meanwhile: ask again
    reviews.allowed.add(STRANGER["username"])
    assert auth.check("Bearer stranger-token").status == 200
    assert auth.reviews_made == 3
    reviews.away = True
    clock.now += 11
    assert auth.check("Bearer reader-token").status == 503
    reviews.away = False
    assert auth.check("Bearer reader-token").status == 200  # the 503 was not kept
    assert "reader-token" not in repr(auth._cache._entries)  # only digests of tokens are kept


def test_the_cache_is_bounded() -> None:
    reviews = FakeReviews()
    auth = MetricsAuth(reviews, max_entries=3)
    for n in range(10):
        assert auth.check(f"Bearer random-{n}").status == 401
    assert len(auth._cache) == 3


@pytest.fixture
def agent() -> Iterator[Agent]:
    features = KernelFeatures("6.18.0", tracepoints={"sock:inet_sock_set_state": True})
    agent = Agent("node-a", lambda records: None, features)
    yield agent
    agent.close()  # its cgroup watcher holds an inotify instance


def test_liveness_follows_the_loop_and_readiness_the_programs(agent: Agent) -> None:
    clock = Clock()
    load_error: list[str | None] = [None]
    health = Health(agent, stall_seconds=120, load_error=lambda: load_error[0], clock=clock)
    assert health.live() == (True, "ok")
    assert health.ready() == (False, "no probe applies to this node yet")
    agent.plan = plan_program({"connections"}, agent.features, 1024)
    assert health.ready() == (True, "ok")
    load_error[0] = "BpfUnavailable: no BPF here"
    assert health.ready() == (False, "BpfUnavailable: no BPF here")
    clock.now += 121
    ok, why = health.live()
    assert not ok and "not run for 121s" in why
    health.beat()
    assert health.live()[0]


def _get(url: str, token: str | None = None, context: ssl.SSLContext | None = None,
         ) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def _insecure() -> ssl.SSLContext:
    """What a scraper with insecureSkipVerify does."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture
def secure(agent: Agent) -> Iterator[tuple[str, str, FakeReviews]]:
    reviews = FakeReviews()
    tls, fingerprint = self_signed_context("127.0.0.1", "node-a")
    server = serve(agent, 0, "127.0.0.1", auth=MetricsAuth(reviews), tls=tls)
    yield f"https://127.0.0.1:{server.server_port}", fingerprint, reviews
    server.shutdown()
    server.server_close()


def test_https_metrics_need_an_allowed_token(secure: tuple[str, str, FakeReviews]) -> None:
    base, _, _ = secure
    status, headers, body = _get(base + "/metrics", context=_insecure())
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert "traceprobe_agent" not in body
    assert _get(base + "/metrics", "forged", _insecure())[0] == 401
    assert _get(base + "/metrics", "stranger-token", _insecure())[0] == 403
    status, _, body = _get(base + "/metrics", "reader-token", _insecure())
    assert status == 200
    assert samples(body, "traceprobe_agent_records_total") == {frozenset(): 0.0}
    # The probes need no token, and say no more than ok or not.
    assert _get(base + "/livez", context=_insecure())[:3:2] == (200, "ok\n")
    assert _get(base + "/readyz", context=_insecure())[:3:2] == (503, "not ready\n")


def test_the_certificate_is_self_signed_for_the_address_and_node(
        secure: tuple[str, str, FakeReviews]) -> None:
    base, fingerprint, _ = secure
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            _insecure().wrap_socket(raw, server_hostname="node-a") as tls:
        der = tls.getpeercert(binary_form=True)
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert der is not None and hashlib.sha256(der).hexdigest() == fingerprint
    pem = ssl.DER_cert_to_PEM_cert(der)
    text = subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem,
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:node-a" in text and "IP Address:127.0.0.1" in text
    # A verifying client refuses it: there is no CA (scrapers skip verification).
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(base + "/livez", timeout=10)


def test_plain_http_to_the_https_port_gets_nothing(secure: tuple[str, str, FakeReviews]
                                                   ) -> None:
    base, _, reviews = secure
    with pytest.raises((ConnectionError, urllib.error.URLError, OSError)):
        urllib.request.urlopen(base.replace("https", "http") + "/metrics", timeout=10).read()
    assert not reviews.calls


def test_beyond_loopback_without_tls_and_reviews_is_refused(agent: Agent) -> None:
    with pytest.raises(ValueError, match="beyond loopback"):
        serve(agent, 0, "0.0.0.0")


def test_the_key_is_made_in_memory_only(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    self_signed_context("0.0.0.0", "node-b")
    assert list(tmp_path.iterdir()) == []


def test_the_operators_exec_probe_against_the_health_listener(
        agent: Agent, capfd: pytest.CaptureFixture[str]) -> None:
    health = Health(agent, stall_seconds=120)
    server = serve_health(health, 0)
    port = server.server_port
    try:
        def probe(path: str) -> int:
            return subprocess.run(health_check(port, path), capture_output=True,
                                  timeout=10).returncode

        assert probe("/livez") == 0
        assert probe("/readyz") != 0  # no probe applies yet
        agent.plan = plan_program({"connections"}, agent.features, 1024)
        assert probe("/readyz") == 0
        assert probe("/metrics") != 0  # the probe listener serves probes only
        status, _, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert (status, body) == (200, "ok\n")
    finally:
        server.shutdown()
        server.server_close()
    assert probe("/livez") != 0  # nothing listens
    # The probe reads each answer to its end: the agent logs no reset connections.
    assert "Exception occurred" not in capfd.readouterr().err


def test_connections_are_capped_and_idle_ones_time_out(agent: Agent,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from traceprobe_agent import health as health_module
    from traceprobe_api.http_server import BoundedHTTPServer

    monkeypatch.setattr(health_module, "CLIENT_TIMEOUT_SECONDS", 1.0)
    server = BoundedHTTPServer(("127.0.0.1", 0), health_module._handler(
        health_module.health_routes(Health(agent))), max_connections=2)
    threading_server = health_module._start(server, "test-health")
    port = threading_server.server_port
    try:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            assert third.recv(100) == b""  # closed at once: no slot free
        assert server.refused_connections == 1
        time.sleep(1.5)  # the idle ones time out and free their slots
        assert _get(f"http://127.0.0.1:{port}/livez")[0] == 200
        for s in idle:
            s.close()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("address,message", [
    ("0.0.0.0", "--standalone serves loopback only"),
    ("10.244.0.1", "--standalone serves loopback only"),
    ("node-a", "not an IP address: 'node-a'"),
])
def test_standalone_metrics_stay_on_loopback(address: str, message: str) -> None:
    """Without the API server nothing could check a scraper's token."""
    result = subprocess.run([sys.executable, "-m", "traceprobe_agent", "--standalone",
                             "--metrics-address", address], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
