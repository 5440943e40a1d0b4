"""HTTP/1.1 requests from the agent's records against what real clients got from a real
server between netns pods (real eBPF, the sock_ops core): counts by method and status on
both sides exactly, and latency quantiles against the clients' own timing.

Truth: curl's own report of each transfer, and tests/harness/http_traffic.py's client,
which times every request itself.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

from harness.recorder import Recorder
from harness.traffic_control import HTTP_TRAFFIC as HTTP
from harness.traffic_control import PY, http_call, http_serve, stop
from traceprobe_api.latency import quantiles

PORT = 8080
KINDS = frozenset({"connections", "bytes", "http"})


def _server(pod: Any) -> subprocess.Popen[str]:
    return http_serve(pod, PORT)


def call(pod: Any, host: str, *requests: str) -> list[dict[str, Any]]:
    return http_call(pod, host, PORT, *requests)


def curl(pod: Any, *args: str) -> Counter[tuple[str, int]]:
    """(method, status) of every transfer, as curl reports it."""
    out = pod.run(["curl", "-s", "--http1.1", "-w", "%{method} %{http_code}\\n", *args],
                  timeout=120)
    return Counter((m, int(s)) for m, s in (line.split() for line in out.stdout.splitlines()))


def requests_seen(rec: Recorder, **match: Any) -> tuple[Counter[tuple[str, int]], Counter[int]]:
    """(method, status) -> requests, and latency bucket -> requests, of matching records."""
    counts: Counter[tuple[str, int]] = Counter()
    buckets: Counter[int] = Counter()
    for record in rec.records:
        if all(getattr(record, k) == v for k, v in match.items()):
            for row in record.requests or ():
                counts[(row.method, row.status)] += row.count
                buckets.update(row.duration_buckets)
    return counts, buckets


def test_requests_by_method_and_status_match_what_the_clients_got(
        pod_factory: Any, bpf_ready: None) -> None:
    """Keep-alive and a connection per request; 404s and 500s; HEAD; 1 MB bodies each
    way (many segments on the veth); a chunked response of many chunks: on the client's
    side and the server's, every request counted once, with its method and status."""
    a = pod_factory.create("http-client", "traffic")
    b = pod_factory.create("http-server", "traffic")
    server = _server(b)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        url = f"http://{b.ip}:{PORT}"
        truth = curl(a, *[arg for path in ("/size/100", "/status/404", "/size/1000000",
                                           "/status/500", "/chunked/300000/40", "/nowhere")
                          for arg in ("-o", "/dev/null", f"{url}{path}")])
        mixed = call(a, b.ip, "HEAD:/size/5000", "POST:/echo:1000000", "GET:/status/503",
                     "DELETE:/status/204", "GET:/chunked/10/3", "GET:/size/0")
        closing = a.run([PY, HTTP, "call", b.ip, str(PORT), "GET:/size/10", "GET:/status/404",
                         "--close"], timeout=60)
        for r in mixed + json.loads(closing.stdout):
            truth[(r["method"], r["status"])] += 1
        assert sum(truth.values()) == 14 and truth[("GET", 404)] == 3
        rec.flush()
        client, client_buckets = requests_seen(rec, role="client", cgroup_id=a.cgroup_id,
                                               remote_port=PORT)
        served, server_buckets = requests_seen(rec, role="server", cgroup_id=b.cgroup_id,
                                               local_port=PORT)
        assert client == truth
        assert served == truth
        assert sum(client_buckets.values()) == sum(server_buckets.values()) == 14
        assert rec.agent.stats.kernel_counters["http_desync"] == 0
        assert rec.agent.stats.kernel_counters["http_unmatched"] == 0
    finally:
        stop(server)
        rec.agent.close()


def test_pipelined_requests_on_one_connection_are_each_counted(
        pod_factory: Any, bpf_ready: None) -> None:
    """Five requests written in one send (one segment), answered in order: five
    requests, each with its own status, on both sides."""
    a = pod_factory.create("http-piper", "traffic")
    b = pod_factory.create("http-pipe-server", "traffic")
    server = _server(b)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        paths = ["/size/10", "/status/404", "/size/2000", "/status/500", "/chunked/100/4"]
        out = a.run([PY, HTTP, "pipeline", b.ip, str(PORT), *paths], timeout=60)
        truth = Counter(("GET", s) for s in json.loads(out.stdout))
        assert truth == Counter({("GET", 200): 3, ("GET", 404): 1, ("GET", 500): 1})
        rec.flush()
        assert requests_seen(rec, role="client", cgroup_id=a.cgroup_id)[0] == truth
        assert requests_seen(rec, role="server", cgroup_id=b.cgroup_id)[0] == truth
    finally:
        stop(server)
        rec.agent.close()


def test_latency_quantiles_match_the_clients_own_timing(
        pod_factory: Any, bpf_ready: None) -> None:
    """200 requests whose server time is spread from 1 to 40 ms. The kernel's p50/p95/p99
    (client side: request out to response in) agree with what the client timed within
    25% of the value plus 1 ms: a bucket is at most 25% wide, and the client's own time
    adds its Python request and parsing work (well under 1 ms on loopback-grade links)
    to what the kernel sees on the wire."""
    a = pod_factory.create("http-timer", "traffic")
    b = pod_factory.create("http-sleeper", "traffic")
    server = _server(b)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        sleeps = [1 + (i * 37) % 40 for i in range(200)]
        timed = call(a, b.ip, *[f"GET:/sleep/{ms}" for ms in sleeps])
        rec.flush()
        counts, buckets = requests_seen(rec, role="client", cgroup_id=a.cgroup_id)
        assert counts == Counter({("GET", 200): 200})
        mine = quantiles(buckets, 0.5, 0.95, 0.99)
        theirs = quantiles_of(sorted(r["seconds"] * 1e9 for r in timed), 0.5, 0.95, 0.99)
        for q, kernel, client in zip((50, 95, 99), mine, theirs, strict=True):
            assert kernel is not None
            assert abs(kernel - client) <= 0.25 * client + 1e6, (q, kernel, client)
    finally:
        stop(server)
        rec.agent.close()


def quantiles_of(ordered: list[float], *qs: float) -> list[float]:
    """Nearest-rank quantiles of sorted samples."""
    return [ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))] for q in qs]


def test_tls_and_cleartext_http2_connections_are_counted_as_not_parsed(
        pod_factory: Any, bpf_ready: None, tmp_path: Any) -> None:
    """What the agent cannot parse, it says: real TLS (curl to openssl's server) and
    cleartext HTTP/2 (curl's prior knowledge) are counted per edge as connections of
    that protocol, with no requests made up for them."""
    from harness.pki import make_ca, server_cert

    a = pod_factory.create("h2-client", "traffic")
    b = pod_factory.create("tls-server", "traffic")
    cert, key = server_cert(tmp_path, make_ca(tmp_path, "ca"), "tls")
    tls = b.popen(["openssl", "s_server", "-quiet", "-accept", "8443", "-cert", str(cert),
                   "-key", str(key), "-www"], stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    web = _server(b)
    rec = Recorder(KINDS, core="sock_ops")
    try:
        for _ in range(30):  # openssl's server listens a moment after it starts
            if a.run(["curl", "-sk", "-o", "/dev/null", f"https://{b.ip}:8443/"],
                     check=False).returncode == 0:
                break
        for _ in range(2):
            a.run(["curl", "-sk", "-o", "/dev/null", f"https://{b.ip}:8443/"])
        a.run(["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge",
               f"http://{b.ip}:{PORT}/size/10"], check=False)  # http.server speaks 1.1 only
        rec.flush()
        tls_seen = sum((r.unparsed or {}).get("tls", 0) for r in rec.records
                       if r.role == "client" and r.cgroup_id == a.cgroup_id
                       and r.remote_port == 8443)
        h2_seen = [r.unparsed for r in rec.records if r.role == "client"
                   and r.cgroup_id == a.cgroup_id and r.remote_port == PORT]
        served = sum((r.unparsed or {}).get("tls", 0) for r in rec.records
                     if r.role == "server" and r.cgroup_id == b.cgroup_id and r.local_port == 8443)
        assert tls_seen >= 3 and served == tls_seen  # the first tries may find no listener
        assert h2_seen == [{"http2": 1}]
        assert not any(r.requests for r in rec.records if r.cgroup_id == a.cgroup_id
                       and r.remote_port == 8443)
    finally:
        stop(tls, web)
        rec.agent.close()
