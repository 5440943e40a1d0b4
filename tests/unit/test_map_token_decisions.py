"""The map's ingest authenticator as decision logic: which TokenReview answers make an
agent (and its node), what is cached and for how long, what is bounded and logged.
The reviewer here is a stand-in for failure injection and counting; the real API
server's answers are in tests/cluster/test_map_ingest_auth.py."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from traceprobe_api.token_cache import bearer_token
from traceprobe_map.ingest_auth import (
    DEFAULT_AUDIENCE,
    NODE_NAME_EXTRA,
    Cause,
    IngestAuth,
    token_expiry,
)

AGENT = "system:serviceaccount:traceprobe-system:traceprobe-agent"


def _jwt(claims: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJSUzI1NiJ9.{body}.c2ln"


def _status(username: str = AGENT, node: str | None = "node-a", authenticated: bool = True,
            audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)) -> dict[str, Any]:
    extra = {NODE_NAME_EXTRA: [node]} if node else {}
    return {"authenticated": authenticated, "audiences": list(audiences),
            "user": {"username": username, "extra": extra}}


class Reviewer:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str]] = []

    def review(self, token: str, audience: str) -> dict[str, Any]:
        self.calls.append((token, audience))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("answer", "cause"), [
    (_status(), None),
    (_status(authenticated=False), Cause.NOT_AUTHENTICATED),
    (_status(audiences=("https://kubernetes.default.svc",)), Cause.NOT_AUTHENTICATED),
    (_status(audiences=()), Cause.NOT_AUTHENTICATED),
    (_status(username="system:serviceaccount:shop:intruder"), Cause.NOT_AGENT),
    (_status(username="admin"), Cause.NOT_AGENT),
    (_status(node=None), Cause.NO_NODE),
    ({**_status(), "user": {"username": AGENT,
                            "extra": {NODE_NAME_EXTRA: ["a", "b"]}}}, Cause.NO_NODE),
    ({}, Cause.NOT_AUTHENTICATED),
    (RuntimeError("connection refused"), Cause.REVIEW_FAILED),
])
def test_review_answers_decide(answer: dict[str, Any] | Exception, cause: Cause | None) -> None:
    reviewer = Reviewer(answer)
    identity = IngestAuth(reviewer, AGENT).check("Bearer t0k")
    assert identity.cause is cause and (identity.node == "node-a") is (cause is None)
    assert reviewer.calls == [("t0k", DEFAULT_AUDIENCE)]  # always with the map's audience


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz",
                                    "t0k"])
def test_no_bearer_token_is_refused_without_asking(header: str | None) -> None:
    reviewer = Reviewer(_status())
    assert IngestAuth(reviewer, AGENT).check(header).cause is Cause.NO_TOKEN
    assert reviewer.calls == []


def test_bearer_token_parsing() -> None:
    assert bearer_token("bearer  abc ") == "abc" and bearer_token("Bearer a b") == "a b"


def test_decisions_are_cached_per_token_and_expire() -> None:
    clock, reviewer = Clock(), Reviewer(_status())
    auth = IngestAuth(reviewer, AGENT, ttl_seconds=60, refusal_ttl_seconds=5, clock=clock)
    for _ in range(10):
        assert auth.check("Bearer a").node == "node-a"
    assert len(reviewer.calls) == 1
    clock.now += 61
    auth.check("Bearer a")
    assert len(reviewer.calls) == 2
    reviewer.answer = _status(authenticated=False)  # refusals: remembered briefly
    auth.check("Bearer b")
    auth.check("Bearer b")
    clock.now += 6
    auth.check("Bearer b")
    assert [t for t, _ in reviewer.calls] == ["a", "a", "b", "b"]


def test_a_cached_acceptance_ends_with_the_tokens_own_expiry() -> None:
    clock, reviewer = Clock(), Reviewer(_status())
    auth = IngestAuth(reviewer, AGENT, ttl_seconds=600, clock=clock)
    token = _jwt({"exp": clock.now + 30})
    auth.check(f"Bearer {token}")
    clock.now += 31
    auth.check(f"Bearer {token}")  # asked again: the API server now says expired
    assert len(reviewer.calls) == 2


def test_failures_to_ask_are_not_cached() -> None:
    reviewer = Reviewer(RuntimeError("timed out"))
    auth = IngestAuth(reviewer, AGENT)
    assert auth.check("Bearer a").cause is Cause.REVIEW_FAILED
    reviewer.answer = _status()
    assert auth.check("Bearer a").node == "node-a"


def test_random_tokens_cannot_grow_the_cache() -> None:
    reviewer = Reviewer(_status(authenticated=False))
    auth = IngestAuth(reviewer, AGENT, max_entries=8)
    for i in range(100):
        auth.check(f"Bearer junk-{i}")
    assert len(auth._cache) == 8
    assert auth.refused[Cause.NOT_AUTHENTICATED] == 100


def test_each_cause_is_logged_once_and_counted_always(caplog: pytest.LogCaptureFixture) -> None:
    auth = IngestAuth(Reviewer(_status(username="intruder")), AGENT)
    with caplog.at_level(logging.WARNING, logger="traceprobe.map.ingest"):
        for i in range(5):
            auth.check(f"Bearer x{i}", peer="ipv4:10.0.0.9:4000")
            auth.check(None)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "intruder is not the agents' ServiceAccount" in lines[0]
    assert "10.0.0.9" in lines[0]
    assert auth.refused == {Cause.NOT_AGENT: 5, Cause.NO_TOKEN: 5}


@pytest.mark.parametrize(("token", "expiry"), [
    (_jwt({"exp": 1700000000}), 1700000000.0),
    (_jwt({"exp": "soon"}), None),
    (_jwt({"exp": True}), None),
    (_jwt({}), None),
    ("not-a-jwt", None),
    ("a.!!!.c", None),
    ("a." + "A" * 9000 + ".c", None),
    (f"a.{base64.urlsafe_b64encode(b'[1]').decode()}.c", None),
])
def test_token_expiry_reads_only_a_sane_exp(token: str, expiry: float | None) -> None:
    assert token_expiry(token) == expiry
