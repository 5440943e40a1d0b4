"""/metrics beyond the node's loopback, the kube-rbac-proxy way: HTTPS with a
certificate made at start, and a bearer token that the API server must accept
(TokenReview) and allow `get` on the non-resource URL /metrics
(SubjectAccessReview). Decisions are cached briefly, per token.

The key pair is made by the `openssl` binary straight into anonymous memory files
(memfd) and loaded from there: the private key never touches a disk, not even
the pod's /tmp, and dies with the process. Nothing verifies the certificate
against a CA (scrapers skip verification, as with kube-rbac-proxy's own); TLS is
there so the token does not cross the network in clear text.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from traceprobe_api.token_cache import TokenCache, bearer_token

log = logging.getLogger("traceprobe.agent")

#: The non-resource URL and verb a scraper must be allowed (as for the API server's own).
METRICS_PATH, METRICS_VERB = "/metrics", "get"


def is_loopback(address: str) -> bool:
    """127.0.0.0/8 and ::1: reachable from this node only (0.0.0.0 and :: are every address)."""
    return ipaddress.ip_address(address).is_loopback


class Reviews(Protocol):
    """The two API calls (traceprobe_agent.kube.NodeApi); both may raise when the API
    server is away."""

    def review_token(self, token: str) -> dict[str, Any] | None:
        """The token's user (username, uid, groups, extra), or None if not authenticated."""

    def may(self, user: dict[str, Any], verb: str, path: str) -> bool:
        """Whether `user` may `verb` the non-resource URL `path`."""


@dataclass(frozen=True)
class Decision:
    status: int  # 200 allowed, 401 not authenticated, 403 not allowed, 503 cannot tell now
    reason: str


class MetricsAuth:
    """Token -> Decision, asking the API server at most once per token per `ttl_seconds`.

    At most `max_entries` tokens are remembered (least recently used go first), so
    random tokens cannot grow the agent's memory. Failures to ask are not cached."""

    def __init__(self, reviews: Reviews, ttl_seconds: float = 10.0, max_entries: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reviews = reviews
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.reviews_made = 0
        self._cache: TokenCache[Decision] = TokenCache(max_entries)

    def check(self, authorization: str | None) -> Decision:
        token = bearer_token(authorization)
        if token is None:
            return Decision(401, "a bearer token is required")
        now = self.clock()
        hit = self._cache.get(token, now)
        if hit is not None:
            return hit
        decision = self._review(token)
        if decision.status != 503:
            self._cache.put(token, now + self.ttl_seconds, decision)
        return decision

    def _review(self, token: str) -> Decision:
        self.reviews_made += 1
        try:
            user = self.reviews.review_token(token)
            if user is None:
                return Decision(401, "the token was not accepted")
            if not self.reviews.may(user, METRICS_VERB, METRICS_PATH):
                return Decision(403, f"{user.get('username', '?')} may not {METRICS_VERB} "
                                     f"{METRICS_PATH}")
        except Exception as exc:  # the API server away, or refusing the agent's reviews
            log.warning("could not review a /metrics token: %s", exc)
            return Decision(503, "cannot check the token now")
        return Decision(200, "allowed")


def _memfd(name: str) -> int:
    return os.memfd_create(name, os.MFD_CLOEXEC)


def self_signed_context(address: str, node: str,
                        openssl: str = "openssl") -> tuple[ssl.SSLContext, str]:
    """A server TLS context with a fresh P-256 key and self-signed certificate for
    `address` and `node`; also the certificate's SHA-256 fingerprint (logged, so a
    scraper may pin it)."""
    names = [f"DNS:{node}"]
    if not ipaddress.ip_address(address).is_unspecified:
        names.append(f"IP:{address}")
    key_fd, cert_fd = _memfd("traceprobe-agent-key"), _memfd("traceprobe-agent-cert")
    try:
        # openssl writes through /dev/fd/N, which the child inherits (pass_fds).
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "3650", "-subj", f"/CN={node}",
             "-addext", "subjectAltName=" + ",".join(names),
             "-addext", "extendedKeyUsage=serverAuth",
             "-keyout", f"/dev/fd/{key_fd}", "-out", f"/dev/fd/{cert_fd}"],
            pass_fds=(key_fd, cert_fd), check=True, capture_output=True, timeout=30)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}")
        os.lseek(cert_fd, 0, os.SEEK_SET)
        pem = os.read(cert_fd, 1 << 16).decode()
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"openssl could not make the metrics certificate: "
                           f"{exc.stderr.decode(errors='replace').strip()}") from None
    finally:
        os.close(key_fd)
        os.close(cert_fd)
    fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    return context, fingerprint
