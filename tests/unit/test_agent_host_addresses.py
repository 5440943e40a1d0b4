"""The node's own addresses, parsed from the kernel's /proc/net files."""

from __future__ import annotations

from datetime import UTC, datetime

from traceprobe_agent.edges import mark_node_peers
from traceprobe_agent.host_addresses import NodeAddresses, node_addresses, read_node_addresses
from traceprobe_api.records import ConnectionRecord, Role

# The shape of this machine's /proc/net/fib_trie (trimmed): local routes are the
# "/32 host LOCAL" leaves, broadcast and network entries are not addresses.
FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 10.234.0.0/16 2 0 2
        |-- 10.234.0.0
           /24 link UNICAST
        |-- 10.234.0.1
           /32 host LOCAL
        |-- 10.234.0.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
     |-- 192.0.2.2
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.236.0.1
        /32 host LOCAL
"""
AT = datetime(2026, 1, 1, tzinfo=UTC)
IF_INET6 = """fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
"""


def test_local_addresses_without_loopback() -> None:
    assert node_addresses(FIB_TRIE, IF_INET6) == {
        "10.234.0.1", "192.0.2.2", "10.236.0.1", "fd00::2", "fe80::fc:ff:fe00:1"}
    assert node_addresses("", "garbage\n") == frozenset()


def test_this_machine_has_addresses_beyond_loopback() -> None:
    found = read_node_addresses()
    assert found and not {"127.0.0.1", "::1"} & found


def test_reread_at_most_every_max_age() -> None:
    reads = []

    def read() -> frozenset[str]:
        reads.append(1)
        return frozenset({f"10.0.0.{len(reads)}"})

    cached = NodeAddresses(read, max_age=3600)
    assert cached() == cached() == {"10.0.0.1"} and len(reads) == 1
    assert NodeAddresses(read, max_age=0)() == {"10.0.0.2"}


def test_records_to_a_node_address_are_marked() -> None:
    def rec(remote: str) -> ConnectionRecord:
        return ConnectionRecord(node="n1", role=Role.SERVER, transport="tcp", family="ipv4",
                                remote_ip=remote, interval_start=AT, interval_end=AT)

    records = [rec("10.234.0.1"), rec("10.234.0.7")]
    mark_node_peers(records, frozenset({"10.234.0.1"}))
    assert [r.remote_on_node for r in records] == [True, None]
    assert '"remoteOnNode":true' in records[0].model_dump_json(by_alias=True,
                                                                exclude_none=True)
