"""PostgreSQL statements and Redis commands from the agent's records against what real
clients got from real servers between netns pods (real eBPF, the sock_ops core): counts
by operation and outcome on both sides exactly, latency quantiles against the clients'
own timing, framing that survives large results and pipelines.

Truth: tests/harness/db_traffic.py's clients (psycopg 3, redis-py), which record each
request's outcome and time themselves, and Redis's own INFO commandstats.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import pytest

from harness import db_servers
from harness.db_servers import DB_TRAFFIC
from harness.recorder import Recorder
from harness.truth import latency_disagreements
from traceprobe_map.request_tally import sqlstate

PG, REDIS = 5432, 6379
KINDS = frozenset({"connections", "bytes", "postgres", "redis"})
PY = sys.executable  # the test's Python: psycopg 3 (the extended protocol) and redis-py 5+
DEBIAN_PY = "/usr/bin/python3"  # Debian's psycopg2 (the simple protocol) and redis-py 4


def call(pod: Any, system: str, host: str, port: int, *requests: str,
         extra: tuple[str, ...] = (), python: str = PY) -> list[dict[str, Any]]:
    out = pod.run([python, DB_TRAFFIC, system, host, str(port), *requests, *extra],
                  timeout=180)
    return list(json.loads(out.stdout))


def truth_of(results: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((r["operation"], r["outcome"]) for r in results)


def seen(rec: Recorder, protocol: str, **match: Any) -> tuple[Counter[tuple[str, str]],
                                                               Counter[int]]:
    """(operation, outcome) -> requests, and latency bucket -> requests."""
    counts: Counter[tuple[str, str]] = Counter()
    buckets: Counter[int] = Counter()
    for record in rec.records:
        if all(getattr(record, k) == v for k, v in match.items()):
            for row in record.requests or ():
                assert row.protocol == protocol
                outcome = (sqlstate(row.status) if protocol == "postgresql"
                           else "ERROR" if row.status else "OK")
                counts[(row.method, outcome)] += row.count
                buckets.update(row.duration_buckets)
    return counts, buckets


def both_sides(rec: Recorder, protocol: str, client: Any, server: Any,
               port: int) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    rec.flush()
    mine, _ = seen(rec, protocol, role="client", cgroup_id=client.cgroup_id, remote_port=port)
    theirs, _ = seen(rec, protocol, role="server", cgroup_id=server.cgroup_id, local_port=port)
    return mine, theirs


@pytest.fixture
def pods(pod_factory: Any, bpf_ready: None) -> tuple[Any, Any]:
    return pod_factory.create("db-client", "traffic"), pod_factory.create("db-server", "traffic")


STATEMENTS = ("SELECT 1", "CREATE TABLE t (id int PRIMARY KEY, v text)",
              "INSERT INTO t VALUES (1, 'a')", "INSERT INTO t VALUES (1, 'b')",
              "UPDATE t SET v = 'c' WHERE id = 1", "SELECT * FROM missing",
              "SELECT 1 / 0", "SELECT v FROM t", "DELETE FROM t", "BEGIN", "SELECT 2",
              "COMMIT", "SHOW server_version", "SELECT generate_series(1, 20000)",
              "DROP TABLE t", "SELECT 3")


def test_postgres_statements_by_operation_and_sqlstate_match_what_the_client_got(
        pods: tuple[Any, Any]) -> None:
    """Success and three kinds of error; a transaction; a result of 20,000 rows over
    many segments followed by more statements (framing kept); the SSL request a client
    sends first when it prefers TLS, refused; the extended protocol (psycopg 3) and the
    simple one (psycopg2): counted exactly on both sides."""
    a, b = pods
    server = db_servers.postgres(b, PG)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        results = call(a, "pg", b.ip, PG, *STATEMENTS)
        results += call(a, "pg", b.ip, PG, "SELECT 4", "SELECT * FROM missing",
                        extra=("--sslmode", "prefer"))
        results += call(a, "pg", b.ip, PG, *STATEMENTS[:9], python=DEBIAN_PY)
        truth = truth_of(results)
        assert truth[("SELECT", "42P01")] == 3 and truth[("INSERT", "23505")] == 2
        assert truth[("SELECT", "22012")] == 2 and sum(truth.values()) == 27
        client, served = both_sides(rec, "postgresql", a, b, PG)
        assert client == truth
        assert served == truth
        counters = rec.agent.stats.kernel_counters
        assert (counters["db_desync"], counters["db_unmatched"]) == (0, 0)
    finally:
        rec.agent.close()
        server.stop()


def test_pipelined_postgres_statements_are_each_counted(pods: tuple[Any, Any]) -> None:
    """psycopg's pipeline mode writes 7 statements, each with its Sync, before reading
    any result: 7 requests in flight on one connection, each counted."""
    a, b = pods
    server = db_servers.postgres(b, PG)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        statements = [f"SELECT {i}" for i in range(6)] + ["SHOW work_mem"]
        results = call(a, "pg", b.ip, PG, *statements, extra=("--pipeline",))
        truth = truth_of(results)
        client, served = both_sides(rec, "postgresql", a, b, PG)
        assert client == truth == Counter({("SELECT", "00000"): 6, ("SHOW", "00000"): 1})
        assert served == truth
    finally:
        rec.agent.close()
        server.stop()


def test_postgres_latency_quantiles_match_the_clients_timing(pods: tuple[Any, Any]) -> None:
    """120 statements that sleep 1-40 ms on the server: the kernel's p50/p95/p99, on
    the client side, equal the client's own within 25% (the bucket's width) + 1 ms (the
    client library's work outside the wire)."""
    a, b = pods
    server = db_servers.postgres(b, PG)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        statements = [f"SELECT pg_sleep({(i % 40 + 1) / 1000})" for i in range(120)]
        results = call(a, "pg", b.ip, PG, *statements)
        rec.flush()
        _, buckets = seen(rec, "postgresql", role="client", cgroup_id=a.cgroup_id,
                          remote_port=PG)
        assert sum(buckets.values()) == 120
        assert latency_disagreements(buckets, results) == []
    finally:
        rec.agent.close()
        server.stop()


def test_postgres_over_tls_is_counted_as_not_parsed(pods: tuple[Any, Any]) -> None:
    """A server that accepts the client's SSL request: the connection is TLS from there
    on, counted as such, with no request made up."""
    a, b = pods
    server = db_servers.postgres(b, PG, ssl=True)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        call(a, "pg", b.ip, PG, "SELECT 1", extra=("--sslmode", "require"))
        rec.flush()
        records = [r for r in rec.records if r.cgroup_id == a.cgroup_id and r.remote_port == PG]
        assert sum(r.unparsed.get("tls", 0) for r in records if r.unparsed) == 1
        assert not any(r.requests for r in records)
    finally:
        rec.agent.close()
        server.stop()


COMMANDS = ("PING", "SET k v", "GET k", "GET nothing", "INCR k", "DEL k", "LPUSH l a b c",
            "LRANGE l 0 -1", "HSET h f 1", "HGETALL h", "HINCRBY h f x", "NOSUCHCOMMAND x",
            "EXISTS k", "SETNX k2 v")


def test_redis_commands_by_command_and_outcome_match_what_the_client_got(
        pods: tuple[Any, Any]) -> None:
    """Simple, bulk, integer, array and error replies (a wrong argument, an unknown
    command); a reply of 5,000 elements over many segments followed by more commands;
    a pipeline of 15 commands in one write (the 16 in flight a connection keeps):
    counted exactly on both sides, and as many
    per command as Redis itself says it served."""
    a, b = pods
    server = db_servers.redis(b, REDIS)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        big = ["RPUSH big " + " ".join(str(i) for i in range(500))] * 10
        results = call(a, "redis", b.ip, REDIS, *COMMANDS, *big, "LRANGE big 0 -1", "GET k2")
        results += call(a, "redis", b.ip, REDIS, *(["INCR n", "GET n", "INCR k2"] * 5),
                        extra=("--pipeline",))
        results += call(a, "redis", b.ip, REDIS, "GET k", "INCR k2", python=DEBIAN_PY)
        truth = truth_of(results)
        assert truth[("_OTHER", "ERROR")] == 0
        assert truth[("HINCRBY", "ERROR")] == 1 and truth[("INCR", "ERROR")] == 7
        truth[("_OTHER", "ERROR")] = truth.pop(("NOSUCHCOMMAND", "ERROR"))
        client, served = both_sides(rec, "redis", a, b, REDIS)
        assert client == truth
        assert served == truth
        stats = db_servers.redis_commandstats(server)
        for command in ("GET", "INCR", "RPUSH", "LRANGE", "PING"):
            assert stats[command] == sum(n for (c, _), n in client.items() if c == command)
        counters = rec.agent.stats.kernel_counters
        assert (counters["db_desync"], counters["db_unmatched"]) == (0, 0)
    finally:
        rec.agent.close()
        server.stop()
