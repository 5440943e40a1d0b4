"""Who may write the map: agents, each with its pod's projected ServiceAccount token.

The API server checks the token (TokenReview, with the map's own audience, so a
token issued for anything else is refused); only the agents' ServiceAccount is
accepted, and only a token bound to a pod on a node: that node is the records'
node, whatever the sender claims. Decisions are cached per token (never past
the token's own expiry) so an agent's steady stream costs one review a minute;
at most `max_entries` tokens are remembered, so random tokens cannot grow memory.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from traceprobe_api.token_cache import TokenCache, bearer_token

log = logging.getLogger("traceprobe.map.ingest")

#: The TokenReview extra the API server adds for a token bound to a scheduled pod.
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
#: The default audience agents request for their token (the chart's default too).
DEFAULT_AUDIENCE = "traceprobe-service-map"


class TokenReviewer(Protocol):
    def review(self, token: str, audience: str) -> dict[str, Any]:
        """The TokenReview's status; raises when the API server cannot answer."""


class Cause(StrEnum):
    """Why a request was refused (the label of the refusal counter)."""

    NO_TOKEN = "no_token"
    NOT_AUTHENTICATED = "not_authenticated"  # invalid, expired, other audience, pod gone
    NOT_AGENT = "not_agent"  # a valid token of another ServiceAccount or user
    NO_NODE = "no_node"  # the agents' account, but not bound to a pod on a node
    REVIEW_FAILED = "review_failed"  # the API server could not be asked (not cached)


@dataclass(frozen=True)
class Identity:
    """A checked caller: its node when accepted, else the cause and what to do."""

    node: str | None
    cause: Cause | None = None
    detail: str = ""


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying (it only shortens a cache entry)."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class IngestAuth:
    """authorization metadata -> Identity, asking the API server at most once per token
    per `ttl_seconds` (refusals: per `refusal_ttl_seconds`); failures to ask are not kept."""

    def __init__(self, reviewer: TokenReviewer, agent_user: str,
                 audience: str = DEFAULT_AUDIENCE, ttl_seconds: float = 60.0,
                 refusal_ttl_seconds: float = 10.0, max_entries: int = 1024,
                 clock: Callable[[], float] = time.time) -> None:
        self.reviewer = reviewer
        self.agent_user = agent_user
        self.audience = audience
        self.ttl_seconds = ttl_seconds
        self.refusal_ttl_seconds = refusal_ttl_seconds
        self.clock = clock
        self.reviews = 0
        self.refused: Counter[Cause] = Counter()
        self._logged: set[Cause] = set()
        self._cache: TokenCache[Identity] = TokenCache(max_entries)
        self._lock = threading.Lock()

    def check(self, authorization: str | None, peer: str = "") -> Identity:
        identity = self._identity(bearer_token(authorization))
        if identity.cause is not None:
            with self._lock:
                self.refused[identity.cause] += 1
                first = identity.cause not in self._logged
                self._logged.add(identity.cause)
            if first:  # once per cause: a misconfigured sender retries for ever
                log.warning("refused an ingest request from %s (%s): %s; further refusals "
                            "for this cause are only counted", peer or "?", identity.cause,
                            identity.detail)
        return identity

    def _identity(self, token: str | None) -> Identity:
        if token is None:
            return Identity(None, Cause.NO_TOKEN, "a bearer token is required: agents send "
                            "their projected ServiceAccount token")
        now = self.clock()
        hit = self._cache.get(token, now)
        if hit is not None:
            return hit
        identity = self._review(token)
        if identity.cause is Cause.REVIEW_FAILED:
            return identity
        until = now + (self.ttl_seconds if identity.node else self.refusal_ttl_seconds)
        expiry = token_expiry(token)
        if expiry is not None:
            until = min(until, expiry)
        self._cache.put(token, until, identity)
        return identity

    def _review(self, token: str) -> Identity:
        self.reviews += 1
        try:
            status = self.reviewer.review(token, self.audience)
        except Exception as exc:  # the API server away or refusing the map's reviews
            return Identity(None, Cause.REVIEW_FAILED, f"cannot check the token now ({exc}); "
                            "retry later")
        if not status.get("authenticated") or self.audience not in (status.get("audiences")
                                                                     or []):
            why = status.get("error") or "not accepted"
            return Identity(None, Cause.NOT_AUTHENTICATED,
                            f"the API server did not accept the token for audience "
                            f"{self.audience!r} ({why})")
        user = status.get("user") or {}
        if user.get("username") != self.agent_user:
            return Identity(None, Cause.NOT_AGENT, f"{user.get('username', '?')} is not the "
                            f"agents' ServiceAccount ({self.agent_user})")
        nodes = (user.get("extra") or {}).get(NODE_NAME_EXTRA) or []
        if len(nodes) != 1 or not nodes[0]:
            return Identity(None, Cause.NO_NODE, "the token is not bound to a pod on a node; "
                            "use the pod's projected token (a serviceAccountToken volume)")
        return Identity(str(nodes[0]))
