"""The service map's only Kubernetes I/O: list-then-watch of what naming needs.

Cluster-wide, read-only: pods, services, endpointslices, nodes, namespaces,
replicasets and jobs (owner chains), and the probes; and TokenReviews of the
tokens agents send with their reports (ingest_auth). Lists and watch events
are read as plain JSON (no client model objects): at thousands of pods the
typed models cost more CPU and memory than everything else here together.
While the API server is away the last view stays in use (at start: none, so remote
ends stay unnamed while the map still takes reports and serves) and each watch
retries with backoff; one line says the server is away, one that it is back.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_api.backoff import Backoff
from traceprobe_api.resources import PROBE_PLURALS
from traceprobe_map.metadata import MetadataCache

log = logging.getLogger("traceprobe.map.kube")
Handler = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class _Source:
    what: str
    list_fn: Callable[..., Any]
    args: tuple[Any, ...]
    on_event: Handler
    on_list: Callable[[list[dict[str, Any]]], None] | None = None


def _sources(api: client.ApiClient, cache: MetadataCache) -> list[_Source]:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    batch, disc = client.BatchV1Api(api), client.DiscoveryV1Api(api)
    custom = client.CustomObjectsApi(api)

    def each(handler: Handler) -> Callable[[list[dict[str, Any]]], None]:
        def relist(items: list[dict[str, Any]]) -> None:
            for obj in items:  # deletions missed while away are rare here; pods relist fully
                cache.safely(lambda o=obj: handler("ADDED", o))  # type: ignore[misc]
        return relist

    sources = [
        _Source("pods", core.list_pod_for_all_namespaces, (),
                lambda e, o: cache.pod(e, o, time.time()),
                lambda items: cache.relist_pods(items, time.time())),
        _Source("services", core.list_service_for_all_namespaces, (),
                lambda e, o: cache.service(e, o, time.time())),
        _Source("endpointslices", disc.list_endpoint_slice_for_all_namespaces, (),
                cache.endpoint_slice),
        _Source("nodes", core.list_node, (), lambda e, o: cache.node(e, o, time.time())),
        _Source("namespaces", core.list_namespace, (), cache.namespace),
        _Source("replicasets", apps.list_replica_set_for_all_namespaces, (),
                lambda e, o: cache.owner(e, o, "ReplicaSet")),
        _Source("jobs", batch.list_job_for_all_namespaces, (),
                lambda e, o: cache.owner(e, o, "Job")),
    ]
    for kind, plural in PROBE_PLURALS.items():
        sources.append(_Source(plural, custom.list_cluster_custom_object,
                               (API_GROUP, API_VERSION, plural),
                               lambda e, o, k=kind: cache.probe(e, o, k)))  # type: ignore[misc]
    return [s if s.on_list else _Source(s.what, s.list_fn, s.args, s.on_event,
                                        each(s.on_event)) for s in sources]


# A review is on the ingest path: an API server slower than this is "cannot check now".
REVIEW_TIMEOUT = (5, 10)


class TokenReviews:
    """ingest_auth.TokenReviewer over the API server's TokenReview API."""

    def __init__(self, api: client.ApiClient) -> None:
        self._auth = client.AuthenticationV1Api(api)

    def review(self, token: str, audience: str) -> dict[str, Any]:
        response = self._auth.create_token_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
             "spec": {"token": token, "audiences": [audience]}},
            _preload_content=False, _request_timeout=REVIEW_TIMEOUT)
        status = json.loads(response.data).get("status")
        return status if isinstance(status, dict) else {}


class _RawWatch(watch.Watch):  # type: ignore[misc]
    """Events as the API server's JSON, not deserialized into client models."""

    def get_return_type(self, func: Any) -> None:
        return None


# Backoff after a failed list or watch: doubling from the first to the last, with
# jitter so a dozen watches that failed together do not retry together.
FIRST_RETRY_SECONDS, LAST_RETRY_SECONDS = 1.0, 30.0
# Connect fails fast on a blackholed address; a list of thousands of pods may take a
# while to read; a watch sends nothing while nothing changes (it ends itself at 300s).
LIST_TIMEOUT, WATCH_TIMEOUT = (10, 60), (10, 330)


def retry_backoff(rand: Callable[[], float] = random.random) -> Backoff:
    """A watch's retry delays: 1, 2, 4, ... at most 30 s, each 75-125 % of that."""
    return Backoff(FIRST_RETRY_SECONDS, LAST_RETRY_SECONDS, jitter=0.5, rand=rand)


def reason(exc: BaseException) -> str:
    """The short cause of a failed request, for a log line."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}".strip()
    cause = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps the real one
    text = str(cause if isinstance(cause, BaseException) else exc)
    return text.rpartition(": ")[2] if "Failed to establish" in text else text


class WatchHealth:
    """One log line when the API server becomes unreachable and one when it is back,
    however many watches notice; and which watch has gone silent.

    A watch lists again at least every WATCH_TIMEOUT (the server ends a watch at 300 s,
    a stuck connection times out at 330 s) or fails and retries within the backoff's
    cap: either is activity. One with no activity for SILENT_SECONDS is hung, which
    only a restart cures, so /healthz says so. An API server that is away is not a
    hang: its failures are activity, and the map keeps serving what it knows."""

    SILENT_SECONDS = 900.0

    def __init__(self, server: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.away = False
        self.lock = threading.Lock()
        self._clock = clock
        self._active: dict[str, float] = {}

    def watching(self, what: str) -> None:
        with self.lock:
            self._active[what] = self._clock()

    def problem(self) -> str | None:
        """Why the map is not healthy (a silent watch), or None."""
        now = self._clock()
        with self.lock:
            silent = sorted(w for w, at in self._active.items()
                            if now - at > self.SILENT_SECONDS)
        if not silent:
            return None
        return (f"watch of {', '.join(silent)} silent for more than "
                f"{self.SILENT_SECONDS:.0f}s (no list, event or error): hung")

    def failed(self, what: str, exc: BaseException, delay: float) -> None:
        unreachable = not isinstance(exc, ApiException | ValueError | KeyError)
        with self.lock:
            self._active[what] = self._clock()
            first, self.away = not self.away and unreachable, self.away or unreachable
        if first:
            log.warning("cannot reach the API server %s (%s): serving the map with what is "
                        "known so far (remote ends unnamed until then), retrying with "
                        "backoff up to %.0fs", self.server, reason(exc), LAST_RETRY_SECONDS)
        elif unreachable:
            log.debug("listing %s: API server still unreachable (%s), retrying in %.1fs",
                      what, reason(exc), delay)
        else:  # reachable but refusing (RBAC, 410 Gone...): this kind's own problem
            log.warning("watching %s failed (%s); keeping the last view, retrying in %.1fs",
                        what, reason(exc), delay)

    def listed(self, what: str) -> None:
        with self.lock:
            self._active[what] = self._clock()
            back, self.away = self.away, False
        if back:
            log.info("API server %s reachable again (listed %s)", self.server, what)


def _list_then_watch(source: _Source, stop: threading.Event, synced: threading.Event,
                     cache: MetadataCache, health: WatchHealth) -> None:
    backoff = retry_backoff()
    health.watching(source.what)
    while not stop.is_set():
        try:
            response = source.list_fn(*source.args, _preload_content=False,
                                      _request_timeout=LIST_TIMEOUT)
            listing = json.loads(response.data)
            assert source.on_list is not None
            source.on_list(listing.get("items") or [])
            synced.set()
            health.listed(source.what)
            backoff.succeeded()
            stream = _RawWatch().stream(
                source.list_fn, *source.args, _request_timeout=WATCH_TIMEOUT,
                resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=300)
            for event in stream:
                health.watching(source.what)
                if event["type"] == "ERROR":  # e.g. 410 Gone: relist
                    raise ValueError(event["raw_object"].get("message", "watch error"))
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    cache.safely(lambda e=event: source.on_event(  # type: ignore[misc]
                        e["type"], e["raw_object"]))
                if stop.is_set():
                    return
        except (ApiException, OSError, HTTPError, ValueError, KeyError) as exc:
            # Expired resource versions (410) land here too: relisting is the cure.
            delay = backoff.failed()
            health.failed(source.what, exc, delay)
            stop.wait(delay)
        except Exception as exc:  # anything else: said in full, retried all the same
            delay = backoff.failed()
            log.exception("watching %s failed unexpectedly; retrying in %.1fs", source.what,
                          delay)
            health.failed(source.what, exc, delay)
            stop.wait(delay)


def watch_cluster(api: client.ApiClient, cache: MetadataCache, stop: threading.Event,
                  health: WatchHealth | None = None) -> dict[str, threading.Event]:
    """Start one watch thread per kind; returns an event per kind, set once listed."""
    synced: dict[str, threading.Event] = {}
    health = health or WatchHealth(str(api.configuration.host))
    for source in _sources(api, cache):
        synced[source.what] = threading.Event()
        threading.Thread(target=_list_then_watch,
                         args=(source, stop, synced[source.what], cache, health),
                         daemon=True, name=f"watch-{source.what}").start()
    return synced
