"""Connection records for the service-map scale benchmark, with the edges they must make.

A fixed set of exchanges (one client process talking to one or more servers) is
drawn once per scenario; every interval emits each exchange's records with fresh
counts. Kinds, as shares of the records: pod → pod direct with both sides
observed, client → ClusterIP with conntrack backends (and a few without, left to
the EndpointSlices), a hostNetwork DaemonSet to pods (the server sees the node's
address), external clients into ingress pods (server side only), pods to external
destinations (client side only), scrapes of node processes, node processes to
pods, and UDP. `Interval.expected` is what a correct merge makes of them, derived
from the design of each exchange, not from the merge code.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import Any

from benchmarks.map_cluster import T0, Cluster, SimPod, SimWorkload
from traceprobe_api.records import ConnectionRecord
from traceprobe_map.buckets import EdgeKey
from traceprobe_map.peers import Peer

BUCKET = 10.0
SHARES = {"direct": 0.33, "service": 0.36, "service-no-conntrack": 0.03, "host-network": 0.03,
          "external-in": 0.05, "external-out": 0.05, "node-scrape": 0.015, "node-process": 0.04,
          "udp": 0.095}
NODE_PORTS = (10250, 10249, 9100)  # kubelet, kube-proxy, node-exporter: node processes
POD_METRICS_PORT = 9102  # node processes → pods
_K8S = ("k8s_namespace", "k8s_pod", "k8s_pod_uid", "k8s_workload_kind", "k8s_workload",
        "k8s_host_network")
_IDENTITY = ("node", "role", "local_ip", "local_port", "remote_ip", "remote_port", "k8s_pod_uid")
_EXT_IN, _EXT_OUT = int(IPv4Address("203.0.0.0")), int(IPv4Address("34.0.0.0"))


@dataclass
class ExpectedEdge:
    connections: int = 0
    backends: Counter[Peer] = field(default_factory=Counter)
    observed_by: set[str] = field(default_factory=set)


@dataclass
class Exchange:
    key: EdgeKey | None  # None: UDP, not drawn
    client: dict[str, Any] | None  # record template (static fields)
    servers: list[tuple[dict[str, Any], Peer, str]]  # template, backend, conntrack address
    conntrack: bool = False

    @property
    def records(self) -> int:
        return (self.client is not None) + len(self.servers)


@dataclass
class Interval:
    records: list[ConnectionRecord]
    expected: dict[EdgeKey, ExpectedEdge]
    udp_records: int


def _side(p: SimPod | None, node: str, role: str, local_ip: str, remote_ip: str | None,
          port: int | None, transport: str = "tcp") -> dict[str, Any]:
    t: dict[str, Any] = {"node": node, "role": role, "transport": transport, "family": "ipv4",
                         "local_ip": local_ip, "remote_ip": remote_ip,
                         "local_port" if role == "server" else "remote_port": port}
    if p is None:  # a process outside pods
        return {**t, "pid": 812, "comm": "kubelet", "cgroup_id": 4021,
                "cgroup_path": "/system.slice/kubelet.service"}
    kind, name = p.agent_name
    h = int(p.uid[:6], 16)
    return {**t, "pid": 1000 + h % 30000, "comm": p.workload.name[:15],
            "cgroup_id": 10_000 + h % 100_000, "cgroup_path": p.cgroup_path,
            "k8s_namespace": p.workload.namespace, "k8s_pod": p.name, "k8s_pod_uid": p.uid,
            "k8s_workload_kind": kind, "k8s_workload": name,
            "k8s_host_network": p.workload.host_network}


def _clone(base: ConnectionRecord, text: tuple[str, ...],
           update: dict[str, Any]) -> ConnectionRecord:
    """`base` with `update` applied, as validation would build it (the values are valid),
    in a tenth of model_copy's time. The `text` fields get their own str objects, as
    decoded records have."""
    values = base.__dict__.copy()
    for k in text:
        values[k] = values[k].encode().decode()
    values.update(update)
    record = ConnectionRecord.__new__(ConnectionRecord)
    object.__setattr__(record, "__dict__", values)
    object.__setattr__(record, "__pydantic_fields_set__", base.model_fields_set | update.keys())
    object.__setattr__(record, "__pydantic_extra__", None)
    object.__setattr__(record, "__pydantic_private__", None)
    return record


class Scenario:
    """The exchanges of one synthetic cluster, `observations` records per interval.

    Drawn so that the merge has one right answer: a client workload reaches a server
    workload through one edge only (directly or through one Service, with or without
    conntrack), and the hostNetwork DaemonSet's targets take no other direct traffic
    (the server sees the node's address and is matched back to it by node)."""

    def __init__(self, cluster: Cluster, observations: int = 100_000, seed: int = 1) -> None:
        self.cluster, self.seed = cluster, seed
        self.rng = random.Random(seed)
        self.exchanges: list[Exchange] = []
        self.mix: Counter[str] = Counter()  # records per kind
        self._seen: set[tuple[Any, ...]] = set()
        self._pair: dict[tuple[Peer, Peer], tuple[EdgeKey, bool]] = {}
        self._bases: dict[tuple[int, bool], tuple[ConnectionRecord, tuple[str, ...]]] = {}
        nodes = len(cluster.nodes)
        self.phase = {n.name: 0.5 + 9.0 * i / max(nodes, 1) for i, n in enumerate(cluster.nodes)}
        self.clients = cluster.of_kind("Deployment", "CronJob", "DaemonSet", "Pod")
        servers = cluster.of_kind("Deployment", "StatefulSet")
        big = [w for w in servers if len(w.pods) >= 3] or servers
        self.host_targets = self.rng.sample(big, min(4, len(big) - 1))
        self.servers = [w for w in servers if w not in self.host_targets]
        self.ingress = [w for w in servers if w.namespace == "ingress"] or servers
        self.scrapers = [w for w in self.clients if w.namespace == "monitoring"] or self.clients
        self.host = [w for w in cluster.workloads if w.host_network]
        self.ext_in = max(4, observations // 200)  # distinct external clients
        self.ext_out = max(2, observations // 1600)  # and destinations: under the 1000 cap
        left = observations
        for kind, share in SHARES.items():
            if kind != "udp":
                left -= self._fill(kind, int(observations * share))
        self._fill("udp", left)

    # --- drawing exchanges --------------------------------------------------
    def _pick(self, w: SimWorkload, n: int) -> list[SimPod]:
        return self.rng.sample(w.pods, min(n, len(w.pods)))

    def _busy(self, ws: list[SimWorkload]) -> SimWorkload:
        """Bigger workloads talk more: picked in proportion to their pods."""
        return self.rng.choices(ws, weights=[len(w.pods) for w in ws])[0]

    def _fill(self, kind: str, budget: int) -> int:
        used, misses = 0, 0
        draw = getattr(self, "_" + kind.replace("-", "_"))
        while used < budget and misses < 200:
            added = 0
            for x in draw():
                if x.records <= budget - used and self._fits(x):
                    self.exchanges.append(x)
                    used += x.records
                    added += 1
            misses = 0 if added else misses + 1
        self.mix[kind] += used
        return used

    def _fits(self, x: Exchange) -> bool:
        """No record identical to one drawn before (the agent would have summed them), and
        no (client, server workload) pair reached through two different edges. UDP records
        are per process and not drawn: any number may repeat."""
        ids = [tuple(t.get(k) for k in _IDENTITY)
               for t in [x.client, *(s[0] for s in x.servers)] if t is not None and x.key]
        pairs = [(x.key.src, backend) for _, backend, _ in x.servers
                 if x.key and backend.kind == "workload"]
        if any(i in self._seen for i in ids) or any(
                self._pair.get(p, (x.key, x.conntrack)) != (x.key, x.conntrack) for p in pairs):
            return False
        self._seen.update(ids)
        for p in pairs:
            self._pair[p] = (x.key, x.conntrack)  # type: ignore[assignment]
        return True

    def _pairs(self, client: SimWorkload, server: SimWorkload, cn: int,
               sn: int) -> list[Exchange]:
        port = server.port
        key = EdgeKey(client.peer, server.peer, port, "tcp")
        return [Exchange(key, _side(c, c.node.name, "client", c.ip, s.ip, port),
                         [(_side(s, s.node.name, "server", s.ip, c.ip, port), server.peer, "")])
                for c in self._pick(client, cn) for s in self._pick(server, sn)]

    def _direct(self) -> list[Exchange]:
        c, s = self._busy(self.clients), self._busy(self.servers)
        return self._pairs(c, s, 6, 6) if c is not s else []

    def _host_network(self) -> list[Exchange]:
        return self._pairs(self.rng.choice(self.host), self.rng.choice(self.host_targets), 8, 3)

    def _service(self, conntrack: bool = True) -> list[Exchange]:
        c, svc = self._busy(self.clients), self.rng.choice(self.cluster.services[1:])
        key = EdgeKey(c.peer, svc.peer, svc.port, "tcp")
        b = svc.backend
        return [Exchange(key, _side(p, p.node.name, "client", p.ip, svc.cluster_ip, svc.port),
                         [(_side(s, s.node.name, "server", s.ip, p.ip, b.port), b.peer,
                           f"{s.ip}:{b.port}") for s in self._pick(b, 4)], conntrack)
                for p in self._pick(c, 6)] if c is not b else []

    def _service_no_conntrack(self) -> list[Exchange]:
        return self._service(conntrack=False)

    def _external_in(self) -> list[Exchange]:
        ip = str(IPv4Address(_EXT_IN + self.rng.randrange(self.ext_in)))
        w = self.rng.choice(self.ingress)
        key = EdgeKey(Peer("external", ip), w.peer, 443, "tcp")
        return [Exchange(key, None, [(_side(s, s.node.name, "server", s.ip, ip, 443), w.peer,
                                      "")]) for s in self._pick(w, 4)]

    def _external_out(self) -> list[Exchange]:
        ip = str(IPv4Address(_EXT_OUT + self.rng.randrange(self.ext_out)))
        w = self._busy(self.clients)
        key = EdgeKey(w.peer, Peer("external", ip), 443, "tcp")
        return [Exchange(key, _side(c, c.node.name, "client", c.ip, ip, 443), [])
                for c in self._pick(w, 6)]

    def _node_scrape(self) -> list[Exchange]:
        w, n = self.rng.choice(self.scrapers), self.rng.choice(self.cluster.nodes)
        port = self.rng.choice(NODE_PORTS)
        key = EdgeKey(w.peer, Peer("node", n.name), port, "tcp")
        return [Exchange(key, _side(c, c.node.name, "client", c.ip, n.ip, port),
                         [(_side(None, n.name, "server", n.ip, c.ip, port), key.dst, "")])
                for c in w.pods]

    def _node_process(self) -> list[Exchange]:
        n, w = self.rng.choice(self.cluster.nodes), self._busy(self.servers)
        port = POD_METRICS_PORT
        key = EdgeKey(Peer("node", n.name), w.peer, port, "tcp")
        return [Exchange(key, _side(None, n.name, "client", n.ip, s.ip, port),
                         [(_side(s, s.node.name, "server", s.ip, n.ip, port), w.peer, "")])
                for s in self._pick(w, 6) if s.node != n]

    def _udp(self) -> list[Exchange]:
        w = self.rng.choice(self.clients)
        return [Exchange(None, _side(c, c.node.name, "udp", c.ip, None, None, "udp"), [])
                for c in self._pick(w, 5)]

    def _base(self, template: dict[str, Any],
              enriched: bool) -> tuple[ConnectionRecord, tuple[str, ...]]:
        key = (id(template), enriched)
        found = self._bases.get(key)
        if found is None:
            fields = template if enriched else {k: v for k, v in template.items()
                                                if k not in _K8S}
            zero = datetime.fromtimestamp(T0, UTC)
            base = ConnectionRecord.model_validate(
                {**fields, "interval_start": zero, "interval_end": zero})
            text = tuple(k for k, v in base.__dict__.items() if type(v) is str)
            found = self._bases[key] = (base, text)
        return found

    # --- one interval -----------------------------------------------------------
    def interval(self, index: int, enriched: bool = True, validate: bool = False) -> Interval:
        """Bucket `index`'s records (every node's interval ends inside it) and the edges
        they must merge to. Not enriched: as the agent has them before naming pods.
        Records are validated once per exchange side and cloned with new counts after
        (own strings and datetimes, like decoded ones); `validate` validates every one."""
        expected: dict[EdgeKey, ExpectedEdge] = {}
        out: list[ConnectionRecord] = []
        for t, fields in self._emitted(index, expected):
            base, text = self._base(t, enriched)
            out.append(ConnectionRecord.model_validate({
                k: v for k, v in base.model_dump().items() if k in base.model_fields_set
            } | fields) if validate else _clone(base, text, fields))
        return Interval(out, expected, sum(x.key is None for x in self.exchanges))

    def restamp(self, records: list[ConnectionRecord], index: int) -> None:
        """Turn an earlier `interval()`'s records into bucket `index`'s, in place: for
        long runs, recycling records the map has merged and let go of (not measured)."""
        for r, (_, fields) in zip(records, self._emitted(index, None), strict=True):
            r.__dict__.update(fields)

    def _emitted(self, index: int, expected: dict[EdgeKey, ExpectedEdge] | None,
                 ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(template, counted fields) of every record of bucket `index`, in a fixed order."""
        rng = random.Random(self.seed * 1_000_003 + index)
        start = T0 + index * BUCKET
        ends = {n: start + p for n, p in self.phase.items()}

        def counts(t: dict[str, Any], n: int, sent: int, received: int,
                   **extra: Any) -> dict[str, Any]:
            end = ends[t["node"]]
            rtt = 80 + (sent % 900)
            return {"interval_start": datetime.fromtimestamp(end - BUCKET, UTC),
                    "interval_end": datetime.fromtimestamp(end, UTC), "opened": n, "closed": n,
                    "bytes_sent": sent, "bytes_received": received, "rtt_sum_us": rtt * n,
                    "rtt_samples": n, "rtt_max_us": 2 * rtt, "duration_sum_ns": 4_000_000 * n,
                    **extra}

        for x in self.exchanges:
            ns = [rng.randint(1, 20) for _ in x.servers] or [rng.randint(1, 20)]
            per = [n * rng.randint(200, 4000) for n in ns]
            if expected is not None and x.key is not None:
                edge = expected.setdefault(x.key, ExpectedEdge())
                edge.connections += sum(ns)
                edge.observed_by.update(["client"] * (x.client is not None)
                                        + ["server"] * bool(x.servers))
                for (_, backend, _), n in zip(x.servers, ns, strict=False):
                    if x.key.dst.kind == "service":
                        edge.backends[backend] += n
            if x.client is not None:
                extra: dict[str, Any] = {"refused": int(rng.random() < 0.05)}
                if x.conntrack:
                    extra["backends"] = {a: n for (_, _, a), n in zip(x.servers, ns,
                                                                      strict=True)}
                yield x.client, counts(x.client, sum(ns), sum(per), 3 * sum(per), **extra)
            for (t, _, _), n, b in zip(x.servers, ns, per, strict=False):
                yield t, counts(t, n, 3 * b, b)

