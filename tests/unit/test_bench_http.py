"""The agent-overhead benchmark's HTTP workload and request-layer variant: wrk's and
nginx's reports, nginx's config, what the agent's records are accounted as, the
request-layer targets and the tail calls in the BPF cost table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/: not installed
from benchmarks import procs
from benchmarks.bpfcost import _prog_id, render
from benchmarks.cpuprofile import Shares
from benchmarks.http_workload import nginx_config, parse_stub_status, parse_wrk
from benchmarks.netns import Placement
from benchmarks.observer_base import Accounting
from benchmarks.observers import Agent, with_kinds
from benchmarks.results import Run, summarise
from benchmarks.targets import on_off_ratio, targets_block
from benchmarks.workloads import Workload, WorkloadResult

# wrk 4.1.0's report, as it printed it on this machine.
WRK = """\
Running 2s test @ http://10.250.0.2:7073/index.html
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   315.00us  555.53us  11.17ms   94.88%
    Req/Sec    17.83k     4.76k   32.69k    82.50%
  71087 requests in 2.00s, 33.49MB read
Requests/sec:  35490.23
Transfer/sec:     16.72MB
"""
WRK_ERRORS = """\
Running 1s test @ http://10.250.0.2:7073/nope
  2 threads and 8 connections
  39612 requests in 1.10s, 11.64MB read
  Socket errors: connect 2, read 3, write 0, timeout 0
  Non-2xx or 3xx responses: 39612
Requests/sec:  36013.14
Transfer/sec:     10.58MB
"""
# nginx's stub_status page (it ends its lines with a space).
STATUS = ("Active connections: 1 \nserver accepts handled requests\n 11 11 71092 \n"
          "Reading: 0 Writing: 1 Waiting: 0 \n")
HTTP = Workload("netns-http", "http", Placement("netns", "c", "s", "10.250.0.2"), 7073)


def test_wrk_report_gives_requests_its_exact_elapsed_time_and_errors() -> None:
    report = parse_wrk(WRK)
    assert report.requests == 71087 and report.errors == {}
    assert report.seconds == pytest.approx(71087 / 35490.23)  # finer than "2.00s"
    failing = parse_wrk(WRK_ERRORS)
    assert failing.errors == {"connect": 2, "read": 3, "non-2xx/3xx": 39612}
    assert failing.connect_errors == 2
    assert parse_wrk("  500 requests in 250.00ms, 1.00MB read\n").seconds == 0.25
    with pytest.raises(RuntimeError, match="wrk printed no result"):
        parse_wrk("unable to connect to 10.250.0.2:7073 Connection refused\n")


def test_stub_status_gives_accepts_and_requests() -> None:
    assert parse_stub_status(STATUS) == (11, 71092)
    with pytest.raises(RuntimeError, match="no counters"):
        parse_stub_status("<html>404</html>")


def test_nginx_config_is_self_contained_with_no_access_log() -> None:
    text = nginx_config(Path("/cache/nginx-1"), "10.250.0.2", 7073)
    assert "listen 10.250.0.2:7073 backlog=4096 reuseport;" in text
    assert "access_log off;" in text and "daemon off;" in text
    assert "listen unix:/cache/nginx-1/status.sock;" in text
    assert "include" not in text and "/etc/nginx" not in text  # no default site
    assert text.count("{") == text.count("}")


def test_the_agent_gets_http_added_to_whatever_kinds_it_was_asked_for() -> None:
    assert with_kinds([], "http")[-2:] == ["--probes",
                                           "connections,failures,bytes,retransmits,rtt,dns,http"]
    assert with_kinds(["--probes", "connections,bytes"], "udp", "http") == [
        "--probes", "connections,bytes", "--probes", "connections,bytes,udp,http"]
    assert with_kinds(["--probes=connections,http"], "http") == ["--probes=connections,http"]


def _result(requests: int = 1000, served: int = 1004, accepted: int = 9) -> WorkloadResult:
    return WorkloadResult(HTTP, 2.0, requests, 0, 0, accepted, 0, client_pid=100,
                          server_pid=200, client_cpu=1.0, server_cpu=1.0,
                          connections=accepted, served=served, server_workers=(201, 202))


def test_agent_records_are_connections_and_requests_of_wrk_and_nginx(tmp_path: Path) -> None:
    agent = Agent("sock_ops", http=True)
    req = [{"protocol": "http", "method": "GET", "status": 200, "count": 502}]
    rows = [
        {"role": "client", "transport": "tcp", "remoteIp": "10.250.0.2", "remotePort": 7073,
         "pid": 100, "opened": 9, "requests": req},
        {"role": "client", "transport": "tcp", "remoteIp": "10.250.0.2", "remotePort": 7073,
         "pid": 100, "opened": 0, "requests": req},
        # the worker owns the accepted sockets; the master opened none
        {"role": "server", "transport": "tcp", "localIp": "10.250.0.2", "localPort": 7073,
         "pid": 201, "opened": 5, "requests": [*req, {**req[0], "status": 404, "count": 2}]},
        {"role": "server", "transport": "tcp", "localIp": "10.250.0.2", "localPort": 7073,
         "pid": 202, "opened": 4, "requests": req[:0]},
        {"role": "client", "transport": "tcp", "remoteIp": "10.250.0.9", "remotePort": 7073,
         "pid": 100, "opened": 3, "requests": req},  # another server: not this workload's
    ]
    agent.out_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    acc = agent.account(_result())
    agent.close()
    assert (acc.client_conns, acc.server_conns) == (9, 9)
    assert (acc.client_requests, acc.server_requests) == (1004, 504)
    run = Run(0, "sock_ops-http", "netns-http", result=_result(), acc=acc)
    assert run.unaccounted() == (0, 0)
    assert run.unaccounted_requests() == (0, 500)


@pytest.mark.parametrize(("client", "missed"), [(1000, 0), (1003, 0), (1004, 0),
                                                (990, 10), (1006, -2)])
def test_client_requests_between_wrks_count_and_nginxs_miss_nothing(client: int,
                                                                    missed: int) -> None:
    acc = Accounting(9, 9, 0, 0, client_requests=client, server_requests=1004)
    run = Run(0, "sock_ops-http", "netns-http", result=_result(), acc=acc)
    assert run.unaccounted_requests() == (missed, 0)


def test_without_a_request_layer_requests_are_not_accounted() -> None:
    run = Run(0, "sock_ops", "netns-http", result=_result(), acc=Accounting(9, 8, 0, 0))
    assert run.unaccounted() == (0, 1) and run.unaccounted_requests() is None
    assert summarise([run], "netns-http", "sock_ops").expected() == 9  # conns, not requests


def _run(variant: str, workload: str, rate: float, repeat: int = 0,
         prof: Shares | None = None) -> Run:
    kind = workload.rsplit("-", 1)[-1]
    w = Workload(workload, kind, HTTP.where, 7070)
    result = WorkloadResult(w, 1.0, int(rate), 0, 0, int(rate), 0, 1, 2, 0.5, 0.5)
    acc = Accounting(int(rate), int(rate), 0, 0)
    return Run(repeat, variant, workload, result=result, acc=acc, prof=prof)


def test_requests_on_vs_off_is_the_profile_estimates_ratio() -> None:
    runs = [_run("baseline", "loopback-churn", 1000, prof=Shares(1000, 0.0, 0.0)),
            _run("sock_ops", "loopback-churn", 900, prof=Shares(1000, 0.08, 0.0)),
            _run("sock_ops-http", "loopback-churn", 891, prof=Shares(1000, 0.09, 0.0)),
            _run("sock_ops", "loopback-churn", 800, repeat=1),
            _run("sock_ops-http", "loopback-churn", 800, repeat=1)]
    summaries = {"loopback-churn": {v: summarise(runs, "loopback-churn", v)
                                    for v in ("baseline", "sock_ops", "sock_ops-http")}}
    by = summaries["loopback-churn"]
    assert on_off_ratio(by["sock_ops-http"], by["sock_ops"]) == pytest.approx(0.995)
    text = targets_block(summaries, [r for r in runs if r.prof])
    line = next(x for x in text.splitlines() if "requests on vs off" in x)
    assert "prof-est 0.989 (0.910 / 0.920)" in line and line.endswith("prof-est ok, rate ok")


def test_tail_called_programs_are_shown_as_counted_in_their_callers() -> None:
    run = _run("sock_ops-http", "netns-http", 1000)
    run.bpf = {"on_egress": (2000, 1_600_000), "on_ingress": (2000, 1_400_000),
               "http_step": (0, 0)}
    run.tail_calls = {"http_step": ["on_egress", "on_ingress"]}
    text = render([run])
    step = next(line for line in text.splitlines() if "http_step" in line)
    assert step.split()[-4:] == ["tail", "call", "in", "on_egress/on_ingress"]
    total = next(line for line in text.splitlines() if "TOTAL" in line)
    assert total.split()[-1] == "3,000"  # (1.6 + 1.4 ms) / 1000 requests: the callers hold it
    assert "http_step: tail called" in text


def test_bpftool_program_array_entries_with_or_without_btf() -> None:
    assert _prog_id({"key": 0, "formatted": {"key": 0, "value": 5160}}) == 5160
    assert _prog_id({"key": ["0x00"] * 4, "value": ["0x28", "0x14", "0x00", "0x00"]}) == 5160


def test_a_child_is_reaped_with_its_cpu_time() -> None:
    child = procs.spawn(["sh", "-c", "exit 3"], stdout=subprocess.DEVNULL)
    code, cpu = procs.wait_rusage(child, 10)
    assert code == 3 and cpu >= 0.0 and child.poll() == 3
