"""A pod IP reused inside one agent interval: each connection stays with the pod that
held the address when it opened (the records' activeFrom/activeUntil), whatever the
interval. The old pod's connection is at 100.2 s, it is deleted at 100.5 s, and the
new pod gets its address `after` seconds later, all inside the interval [100, 110)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from traceprobe_api.records import ConnectionRecord, Role
from traceprobe_map.buckets import EdgeKey
from traceprobe_map.merge import merge
from traceprobe_map.peers import Peer, Resolver

DB = Peer("workload", "db", "shop", "StatefulSet")
OLD = Peer("workload", "worker", "shop", "Deployment")
NEW = Peer("workload", "report", "pay", "CronJob")
ADDRESS, DB_IP = "10.0.0.5", "10.0.0.2"
START, END, OLD_OPENS, OLD_GOES = 100.0, 110.0, 100.2, 100.5
REUSE_AFTER = [0, 2, 9]


def _t(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _world(after: float) -> Resolver:
    r = Resolver()
    r.pods.claim(DB_IP, DB, since=0)
    r.pods.claim(ADDRESS, OLD, since=0)
    r.pods.release(ADDRESS, OLD, at=OLD_GOES)
    r.pods.claim(ADDRESS, NEW, since=OLD_GOES + after)
    return r


def _record(role: Role, opens: list[float], **kw: Any) -> ConnectionRecord:
    return ConnectionRecord(
        node=kw.pop("node", "n1"), role=role, transport="tcp", family="ipv4",
        interval_start=_t(START), interval_end=_t(END), active_from=_t(min(opens)),
        active_until=_t(max(opens)), opened=len(opens), closed=len(opens),
        bytes_sent=100 * len(opens), bytes_received=10 * len(opens), **kw)


def _client(peer: Peer, opens: list[float]) -> ConnectionRecord:
    return _record(Role.CLIENT, opens, remote_ip=DB_IP, remote_port=5432,
                   k8s_namespace=peer.namespace, k8s_workload_kind=peer.workload_kind,
                   k8s_workload=peer.name)


def _server(opens: list[float], retransmits: int = 0) -> ConnectionRecord:
    return _record(Role.SERVER, opens, node="n2", local_ip=DB_IP, local_port=5432,
                   remote_ip=ADDRESS, k8s_namespace="shop", k8s_workload_kind="StatefulSet",
                   k8s_workload="db", retransmits=retransmits)


def _counts(edges: dict[EdgeKey, Any]) -> dict[tuple[str, str], tuple[int, list[str]]]:
    return {(k.src.label, k.dst.label): (v.connections, sorted(v.observed_by))
            for k, v in edges.items()}


@pytest.mark.parametrize("after", REUSE_AFTER)
def test_a_silent_new_owner_inherits_nothing(after: float) -> None:
    result = merge([_client(OLD, [OLD_OPENS]), _server([OLD_OPENS])], _world(after))
    assert _counts(result.edges) == {("shop/worker", "shop/db"): (1, ["client", "server"])}
    assert result.reused_address_records == 0


@pytest.mark.parametrize("after", REUSE_AFTER)
def test_both_owners_keep_their_own_connections(after: float) -> None:
    """The server's one record spans both owners: each owner's client side accounts for
    its part, so nothing is counted twice and both edges keep their server side."""
    new_opens = OLD_GOES + after + 0.3
    records = [_client(OLD, [OLD_OPENS]), _client(NEW, [new_opens, new_opens]),
               _server([OLD_OPENS, new_opens, new_opens], retransmits=4)]
    result = merge(records, _world(after))
    assert _counts(result.edges) == {("shop/worker", "shop/db"): (1, ["client", "server"]),
                                     ("pay/report", "shop/db"): (2, ["client", "server"])}
    assert result.reused_address_records == 1
    # The server's own figures cannot be split by owner: they go to the latest one.
    server_sent = {k.src: v.server_retransmits for k, v in result.edges.items()}
    assert server_sent == {OLD: 0, NEW: 4}


@pytest.mark.parametrize("after", REUSE_AFTER)
def test_clients_name_a_reused_server_address_by_its_owner_then(after: float) -> None:
    """The other way round: the server pod goes and another pod gets its address; the
    client's record of its call to the old one names the old one."""
    r = Resolver()
    r.pods.claim(DB_IP, DB, since=0)
    r.pods.release(DB_IP, DB, at=OLD_GOES)
    r.pods.claim(DB_IP, NEW, since=OLD_GOES + after)
    client = _record(Role.CLIENT, [OLD_OPENS], remote_ip=DB_IP, remote_port=5432,
                     k8s_namespace="shop", k8s_workload_kind="Deployment", k8s_workload="web")
    assert _counts(merge([client], r).edges) == {("shop/web", "shop/db"): (1, ["client"])}


def test_a_server_alone_goes_to_the_latest_owner_and_is_counted_as_such() -> None:
    """No client side to tell the owners apart (clients without an agent): the record's
    counts cannot be split, stay together on the latest owner, and the map counts it."""
    result = merge([_server([OLD_OPENS, OLD_GOES + 2.3])], _world(2))
    assert _counts(result.edges) == {("pay/report", "shop/db"): (2, ["server"])}
    assert result.reused_address_records == 1


def test_an_older_agents_record_without_a_span_is_named_at_its_end() -> None:
    plain = _server([OLD_OPENS]).model_copy(update={"active_from": None, "active_until": None})
    assert _counts(merge([plain], _world(2)).edges) == {("pay/report", "shop/db"): (1, ["server"])}


def test_a_span_beyond_the_interval_is_held_to_its_end() -> None:
    late = _server([OLD_OPENS]).model_copy(update={"active_from": _t(500), "active_until": _t(900)})
    assert _counts(merge([late], _world(2)).edges) == {("pay/report", "shop/db"): (1, ["server"])}
