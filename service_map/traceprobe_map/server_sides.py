"""Is a server-side observation already counted by some client side? (pure)

The rules merge.finish applies to each server-side edge of a bucket: the same
edge from its client; the Service edge conntrack or the EndpointSlices say it went
through; a hostNetwork client seen by the server as its node; or any of those in a
neighbouring bucket (Recent). What none of them accounts for is a client without
an agent, and is counted from the server side.
"""

from __future__ import annotations

from collections.abc import Iterable

from traceprobe_map.buckets import EdgeKey, Partial, Recent
from traceprobe_map.peers import Peer, Resolver


class Lookups:
    """What `counted_by` asks repeatedly, computed once per finish (same answers)."""

    def __init__(self, part: Partial, resolver: Resolver) -> None:
        self.part = part
        self._resolver = resolver
        self._backends: dict[tuple[Peer, float], set[Peer]] = {}
        self._by_target: dict[tuple[Peer, int | None], list[EdgeKey]] | None = None
        self._services: dict[Peer, list[EdgeKey]] | None = None
        self._via_backend: dict[Peer, list[EdgeKey]] | None = None
        self._on_node: dict[str, list[EdgeKey]] = {}

    def backends_of(self, service: Peer, at: float) -> set[Peer]:
        found = self._backends.get((service, at))
        if found is None:
            found = self._backends[(service, at)] = self._resolver.backends_of(service, at)
        return found

    def by_target(self, dst: Peer, port: int | None) -> list[EdgeKey]:
        """Client edges to `dst` on `port`, in the client dict's order."""
        if self._by_target is None:
            self._by_target = {}
            for key in self.part.client:
                self._by_target.setdefault((key.dst, key.port), []).append(key)
        return self._by_target.get((dst, port), [])

    def _service_index(self) -> dict[Peer, list[EdgeKey]]:
        if self._services is None:
            self._services = {}
            for key in self.part.client:
                if key.dst.kind == "service":
                    self._services.setdefault(key.src, []).append(key)
        return self._services

    def service_edges(self, src: Peer) -> list[EdgeKey]:
        """Client → Service edges of `src`."""
        return self._service_index().get(src, [])

    def services_from_node(self, node: str) -> list[EdgeKey]:
        """Client → Service edges whose clients ran on `node`."""
        found = self._on_node.get(node)
        if found is None:
            found = self._on_node[node] = [
                k for keys in self._service_index().values() for k in keys
                if node in self.part.client[k].src_nodes]
        return found

    def via_backend(self, backend: Peer) -> list[EdgeKey]:
        if self._via_backend is None:
            self._via_backend = {}
            for (_client, b), key in self.part.via_service.items():
                self._via_backend.setdefault(b, []).append(key)
        return self._via_backend.get(backend, [])


def _through_service(key: EdgeKey, at: float, candidates: Iterable[EdgeKey], part: Partial,
                     lookups: Lookups) -> EdgeKey | None:
    for service_key in candidates:
        if service_key not in part.conntracked and key.dst in lookups.backends_of(
                service_key.dst, at):
            return service_key
    return None


def counted_by(key: EdgeKey, at: float, part: Partial, lookups: Lookups,
               recent: Recent | None) -> EdgeKey | None:
    """The client-side edge that already counts this server-side one, if any."""
    client = part.client
    if key in client:
        return key
    via = part.via_service.get((key.src, key.dst))
    if via is not None:
        return via
    found = _through_service(key, at, lookups.service_edges(key.src), part, lookups)
    if found is not None:
        return found
    if recent is not None:  # counted in a neighbouring window?
        if key in recent.client_keys:
            return key
        via = recent.via_service.get((key.src, key.dst))
        if via is not None:
            return via
        found = _through_service(key, at, recent.service_edges.get(key.src, ()), part,
                                 lookups)
        if found is not None:
            return found
    if key.src.kind == "node":
        # A hostNetwork client's address is its node's: the server sees the node,
        # the client's own agent named the pod. Same server and node; directly or
        # through a Service (conntrack or EndpointSlices named this backend).
        node = key.src.name
        for client_key in lookups.by_target(key.dst, key.port):
            if node in client[client_key].src_nodes:
                return client_key
        for service_key in lookups.via_backend(key.dst):
            if node in client[service_key].src_nodes:
                return service_key
        return _through_service(key, at, lookups.services_from_node(node), part, lookups)
    return None
