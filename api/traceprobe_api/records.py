"""Connection records: what a node agent observed for one edge in one interval.

An edge is one local process (pod, cgroup) talking to one remote address and
port in one role. Counters are deltas over [interval_start, interval_end);
the service map sums them. No payload bytes ever appear here, only counts.
"""

from __future__ import annotations

import functools
import ipaddress
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from traceprobe_api.base import ObservedModel
from traceprobe_api.latency import BUCKETS

MAX_COUNT = 2**53 - 1
"""The largest counter a record may carry, and where the map's sums stop (saturate):
exact in a double, so every OTLP backend can hold it. 9 PB per interval is beyond
any link; a larger value is refused as malformed."""
MAX_BACKENDS = 1000
"""Distinct backends in one record (as many as one EndpointSlice holds); an agent that
saw more in one interval keeps the busiest, the rest show as of unknown backend."""

@functools.lru_cache(maxsize=65536)
def _address(text: str) -> str:
    """An IP address in its text form (a cache: a node's records repeat few addresses)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {text[:64]!r}") from None
    return text


_Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
_Port = Annotated[int, Field(ge=0, le=65535)]
_Address = Annotated[str, Field(max_length=45), AfterValidator(_address)]
_Name = Annotated[str, Field(max_length=253)]  # a DNS subdomain: node, pod, workload names
_Namespace = Annotated[str, Field(max_length=63)]


MAX_REQUEST_ROWS = 512
"""Method x status rows in one record: methods are a fixed set and a status a small
number, so an edge's interval holds few; more is refused as malformed."""
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                "PATCH")
"""bpf/tcp_streams.h's METHOD_* 1 … 9; any other method is "_OTHER"."""
DNS_TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "SRV", "PTR", "NS", "SOA", "HTTPS", "ANY")
"""bpf/dns_requests.h's QTYPE_* 1 … 11: the question's type; any other is "_OTHER"."""
POSTGRES_OPERATIONS = (
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "BEGIN", "START", "COMMIT", "END",
    "ROLLBACK", "RELEASE", "CREATE", "ALTER", "DROP", "TRUNCATE", "COPY", "SET", "SHOW",
    "RESET", "CALL", "DO", "EXPLAIN", "ANALYZE", "VACUUM", "LISTEN", "NOTIFY", "UNLISTEN",
    "PREPARE", "EXECUTE", "DECLARE", "FETCH", "CLOSE", "DISCARD", "LOCK", "GRANT", "REVOKE",
    "VALUES", "TABLE")
"""bpf/pg_fields.h's PG_OPERATIONS 1 …: a statement's first keyword; else "_OTHER"."""
REDIS_COMMANDS = (
    "GET", "SET", "DEL", "EXISTS", "EXPIRE", "TTL", "INCR", "INCRBY", "DECR", "MGET", "MSET",
    "GETDEL", "SETEX", "SETNX", "APPEND", "HGET", "HSET", "HDEL", "HGETALL", "HINCRBY",
    "HMGET", "LPUSH", "RPUSH", "LPOP", "RPOP", "LRANGE", "LLEN", "SADD", "SREM", "SMEMBERS",
    "SCARD", "ZADD", "ZRANGE", "ZREM", "ZSCORE", "PUBLISH", "PING", "AUTH", "SELECT", "HELLO",
    "CLIENT", "INFO", "MULTI", "EXEC", "WATCH", "EVAL", "EVALSHA", "SCAN", "KEYS", "TYPE",
    "FLUSHDB", "XADD", "XREAD", "COMMAND", "CONFIG")
"""bpf/redis_messages.h's REDIS_COMMANDS 1 …: a command's name; any other is "_OTHER"."""
SQLSTATE_LIMIT = 36 ** 5
"""A Postgres status is the SQLSTATE's five characters (0-9, A-Z) in base 36: 0 is
success ("00000"); 1 ("00001") an error whose code was not read."""
_STATUSES = {"http": (100, 599), "dns": (0, 15), "postgresql": (0, SQLSTATE_LIMIT - 1),
             "redis": (0, 1), "grpc": (0, 16)}  # status codes; DNS response codes;
# SQLSTATE; error reply; gRPC status codes
_METHODS = {"http": {*HTTP_METHODS, "_OTHER"}, "dns": {*DNS_TYPES, "_OTHER"},
            "postgresql": {*POSTGRES_OPERATIONS, "_OTHER"},
            "redis": {*REDIS_COMMANDS, "_OTHER"}, "grpc": {*HTTP_METHODS, "_OTHER"}}


class RequestCounts(ObservedModel):
    """Requests of one method answered with one status on an edge in one interval, as
    the record's side saw them (role client: the client's time to first byte of the
    response; server: the server's time to answer). Only these parsed fields ever
    leave the node: no path, query, name, header or body.

    HTTP: `method` is the request's method, `status` the response's status code. DNS:
    `method` is the question's type, `status` the response code (0 NOERROR, 3 NXDOMAIN).
    PostgreSQL: `method` is the statement's first keyword, `status` its SQLSTATE (see
    SQLSTATE_LIMIT). Redis: `method` is the command, `status` 1 for an error reply. gRPC:
    `method` is the HTTP/2 request's (POST), `status` the grpc-status (0 is OK)."""

    protocol: Literal["http", "dns", "postgresql", "redis", "grpc"]
    method: Annotated[str, Field(max_length=8)]
    status: Annotated[int, Field(ge=0, lt=SQLSTATE_LIMIT)]
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    duration_sum_ns: _Count = 0
    duration_buckets: Annotated[dict[Annotated[int, Field(ge=0, lt=BUCKETS)], _Count],
                                Field(max_length=BUCKETS)] = Field(default_factory=dict)
    """Latency bucket (traceprobe_api.latency) -> requests; they sum to `count`."""

    @model_validator(mode="after")
    def _buckets_add_up(self) -> RequestCounts:
        low, high = _STATUSES[self.protocol]
        if not low <= self.status <= high:
            raise ValueError(f"{self.protocol} status {self.status} is not in {low}-{high}")
        if self.method not in _METHODS[self.protocol]:
            raise ValueError(f"{self.method!r} is no {self.protocol} method; one of "
                             f"{sorted(_METHODS[self.protocol])}")
        if sum(self.duration_buckets.values()) != self.count:
            raise ValueError(f"durationBuckets sum to {sum(self.duration_buckets.values())},"
                             f" not to count {self.count}")
        return self


_new, _set = object.__new__, object.__setattr__  # pydantic's own fast path, by hand


class Role(StrEnum):
    CLIENT = "client"  # the local side connected out
    SERVER = "server"  # the local side accepted
    UDP = "udp"        # datagrams of a local process, peers not visible (tracepoint core)


class ConnectionRecord(ObservedModel):
    """Counts for one edge over one interval, as seen from one node."""

    node: Annotated[str, Field(min_length=1, max_length=253)]
    """Node (or host, in standalone mode) that observed it."""
    role: Role
    """UDP with a peer (transport udp) is a client when its socket sent first."""
    transport: Annotated[str, Field(pattern="^(tcp|udp)$")]
    family: Annotated[str, Field(pattern="^ipv[46]$")]
    local_ip: _Address | None = None
    local_port: _Port | None = None
    """Server role only: the port that accepted."""
    remote_ip: _Address | None = None
    remote_port: _Port | None = None
    """Client role only: the port connected to."""
    remote_on_node: bool | None = Field(default=None, alias="remoteOnNode")
    """True when remote_ip is one of the observing node's own addresses (a CNI gateway,
    a second interface): the peer is that node, whichever address it used."""
    remote_dns_name: _Name | None = Field(default=None, alias="remoteDnsName")
    """Client role: the name a DNS answer gave for remote_ip, when the agent saw one
    (probe kind `dns`); the map names external peers by it."""
    pid: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    """Local process id (None: not attributable, e.g. closed before any syscall)."""
    comm: Annotated[str, Field(max_length=64)] = ""
    cgroup_id: Annotated[int, Field(ge=0, le=2**64 - 1)] = 0
    cgroup_path: Annotated[str, Field(max_length=4096)] | None = None
    """cgroup v2 path of the local process, when resolvable (standalone naming)."""
    # Explicit aliases: the generated camelCase would read "k8SPod".
    k8s_namespace: _Namespace | None = Field(default=None, alias="k8sNamespace")
    """Local side's pod namespace (cluster mode, resolved by cgroup → pod UID)."""
    k8s_pod: _Name | None = Field(default=None, alias="k8sPod")
    k8s_pod_uid: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, alias="k8sPodUid")
    k8s_workload_kind: Annotated[str, Field(max_length=63)] | None = Field(
        default=None, alias="k8sWorkloadKind")
    """Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet or Pod."""
    k8s_workload: _Name | None = Field(default=None, alias="k8sWorkload")
    k8s_host_network: bool | None = Field(default=None, alias="k8sHostNetwork")
    interval_start: datetime
    interval_end: datetime
    active_from: datetime | None = None
    active_until: datetime | None = None
    """TCP: when the earliest and the latest connection counted here opened, clamped to
    the interval (one open before it counts from its start). The map names the remote
    address by who held it then: a pod IP reused inside the interval does not take over
    the old pod's connections. None: no span known (UDP, older agents): the interval's end."""
    opened: _Count = 0
    """TCP connections established."""
    closed: _Count = 0
    """TCP connections closed, of those established."""
    datagrams_sent: _Count = 0
    """UDP datagrams (bytes_sent/bytes_received are their payload)."""
    datagrams_received: _Count = 0
    refused: _Count = 0
    timeouts: _Count = 0
    resets: _Count = 0
    bytes_sent: _Count = 0
    bytes_received: _Count = 0
    retransmits: _Count = 0
    rtt_sum_us: _Count = 0
    rtt_samples: _Count = 0
    rtt_max_us: _Count = 0
    duration_sum_ns: _Count = 0
    backends: Annotated[dict[Annotated[str, Field(max_length=64)], _Count],
                        Field(max_length=MAX_BACKENDS)] = Field(default_factory=dict)
    """Client role to a NATed address (a ClusterIP): connections per real
    destination `ip:port`, read from conntrack (kube-proxy DNAT)."""
    requests: Annotated[list[RequestCounts], Field(max_length=MAX_REQUEST_ROWS)] | None = None
    """TCP, probe kind `http`: the requests answered on this edge in the interval (None:
    none, which keeps the wire form of every other record as it was)."""
    unparsed: dict[Literal["tls", "http2"], Annotated[int, Field(ge=1, le=MAX_COUNT)]] | None = None
    """Probe kind `http`: connections opened here that were TLS or cleartext HTTP/2 (by
    their first bytes), whose requests are not parsed: what the map cannot see."""

    def replaced(self, **update: Any) -> ConnectionRecord:
        """A copy with `update` applied, not validated again: for hot paths whose
        values are known valid (names from the API server). model_copy costs ~10x."""
        record = _new(ConnectionRecord)
        _set(record, "__dict__", {**self.__dict__, **update})
        _set(record, "__pydantic_fields_set__", self.__pydantic_fields_set__ | update.keys())
        _set(record, "__pydantic_extra__", None)
        _set(record, "__pydantic_private__", None)
        return record

    @property
    def failures(self) -> int:
        return self.refused + self.timeouts + self.resets
