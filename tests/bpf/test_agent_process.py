"""The agent as a process (standalone mode): clean detach on SIGKILL, resume on
restart, Degraded instead of a crash when a tracepoint is missing, own metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from harness.bpf import held_ids, live_ids
from harness.metrics import by_label
from harness.tools import REPO
from traceprobe_agent.features import probe_kernel
from traceprobe_operator.agent_workload import health_check


class AgentProc:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "traceprobe_agent", "--standalone", "--interval", "1",
             "--metrics-port", "0", *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        self.metrics_url = ""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"agent exited early: {''.join(self.stderr)}")
            self.stderr.append(line)
            if "/metrics" in line:
                self.metrics_url = line.strip().rsplit(" ", 1)[-1]
            if line.startswith('{"ready"'):
                self.ready = json.loads(line)
                return
        raise AssertionError("agent not ready in 60s")

    def stop(self) -> list[dict[str, Any]]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        self.stderr.append(err)
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def _loopback_connections(n: int) -> int:
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])
    for _ in range(n):
        client = socket.create_connection(("127.0.0.1", port))
        peer, _ = server.accept()
        client.close()
        peer.close()
    server.close()
    return port


def _cgroup_programs() -> str:
    """Programs attached anywhere in the cgroup v2 tree (names), per bpftool."""
    return subprocess.run(["bpftool", "cgroup", "tree"], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def agent_proc(bpf_ready: None) -> Iterator[list[AgentProc]]:
    started: list[AgentProc] = []
    yield started
    for a in started:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()


# The programs each core links to cgroups (bpftool shows their names there).
CGROUP_LINKED = {"sock_ops": ("on_sock_create", "on_sock_ops", "on_egress", "on_ingress",
                              "dns_ingress"),
                 "tracepoint": ("dns_ingress",)}


@pytest.mark.parametrize("core", ["sock_ops", "tracepoint"])
def test_sigkill_leaves_no_programs_or_maps_and_restart_resumes(agent_proc: Any,
                                                                core: str) -> None:
    first = AgentProc("--core", core)
    agent_proc.append(first)
    progs, maps = held_ids(first.proc.pid, "prog"), held_ids(first.proc.pid, "map")
    assert len(progs) == len(first.ready["programs"]) >= (4 if core == "sock_ops" else 6)
    assert maps and "cgroup_skb/dns_ingress" in first.ready["programs"]
    linked = _cgroup_programs()
    assert all(name in linked for name in CGROUP_LINKED[core]), linked
    assert progs <= live_ids("prog") and maps <= live_ids("map")
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    deadline = time.monotonic() + 10  # the kernel frees them once the last fd closes
    while time.monotonic() < deadline and (progs & live_ids("prog") or maps & live_ids("map")):
        time.sleep(0.2)
    assert not progs & live_ids("prog"), "programs leaked after SIGKILL"
    assert not maps & live_ids("map"), "maps leaked after SIGKILL"
    left = _cgroup_programs()
    assert not [n for n in CGROUP_LINKED[core] if n in left], f"left attached: {left}"

    second = AgentProc("--core", core)
    agent_proc.append(second)
    port = _loopback_connections(4)
    time.sleep(0.2)
    records = second.stop()
    mine = [r for r in records if r["role"] == "client" and r.get("remotePort") == port]
    assert sum(r["opened"] for r in mine) == 4 and sum(r["closed"] for r in mine) == 4
    assert mine[0]["pid"] == os.getpid()


def test_missing_tracepoint_degrades_instead_of_crashing(agent_proc: Any) -> None:
    agent = AgentProc("--core", "tracepoint", "--probes", "connections,rtt",
                      "--disable-tracepoint", "tcp:tcp_probe")
    agent_proc.append(agent)
    assert "tracepoint/tcp:tcp_probe" not in agent.ready["programs"]
    assert "tracepoint/sock:inet_sock_set_state" in agent.ready["programs"]
    assert any("degraded: tracepoints missing: rtt needs tcp:tcp_probe" in line
               for line in agent.stderr)
    port = _loopback_connections(2)
    records = agent.stop()
    mine = [r for r in records if r["role"] == "client" and r.get("remotePort") == port]
    assert sum(r["opened"] for r in mine) == 2 and all(r["rttSamples"] == 0 for r in mine)


def test_agent_reports_bytes_degraded_with_the_reason(agent_proc: Any) -> None:
    """Without the bytes tracepoints the kprobe fallback stands in, where there are
    kprobes (not on these machines): else bytes are Degraded, named, and the rest runs."""
    agent = AgentProc("--core", "tracepoint", "--probes", "connections,bytes",
                      "--disable-tracepoint",
                      "sock:sock_send_length", "--disable-tracepoint", "sock:sock_recv_length")
    agent_proc.append(agent)
    assert "tracepoint/sock:inet_sock_set_state" in agent.ready["programs"]
    if probe_kernel().kprobes:
        assert "kprobe/tcp_sendmsg" in agent.ready["programs"]
    else:
        assert any("degraded: tracepoints missing: bytes needs sock:sock_recv_length, "
                   "sock:sock_send_length, kprobes (for the fallback)" in line
                   for line in agent.stderr), agent.stderr
    port = _loopback_connections(2)
    records = agent.stop()
    mine = [r for r in records if r["role"] == "client" and r.get("remotePort") == port]
    assert sum(r["opened"] for r in mine) == 2


def test_nothing_runnable_is_a_clear_error(bpf_ready: None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "traceprobe_agent", "--standalone", "--metrics-port", "-1",
         "--core", "tracepoint", "--disable-tracepoint", "sock:inet_sock_set_state"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "nothing can run: tracepoints missing: connections needs " \
           "sock:inet_sock_set_state" in result.stderr
    assert "Traceback" not in result.stderr


def test_metrics_and_health_endpoints(agent_proc: Any) -> None:
    agent = AgentProc("--max-connections", "2048")
    agent_proc.append(agent)
    with urllib.request.urlopen(agent.metrics_url.replace("/metrics", "/healthz")) as r:
        assert r.status == 200
    with urllib.request.urlopen(agent.metrics_url) as r:
        text = r.read().decode()
    assert by_label(text, "traceprobe_agent_map_capacity", "map")["conns"] == 2048
    drops = by_label(text, "traceprobe_agent_kernel_drops_total", "cause")
    assert set(drops) >= {"conn_map_full", "edge_map_full", "untracked_io"}
    assert drops["conn_map_full"] == 0 and drops["edge_map_full"] == 0, drops
    rss = next(float(line.split()[1]) for line in text.splitlines()
               if line.startswith("process_resident_memory_bytes"))
    assert 10e6 < rss < 500e6
    _loopback_connections(3)
    time.sleep(1.5)  # one interval: the agent drains and counts
    with urllib.request.urlopen(agent.metrics_url) as r:
        text = r.read().decode()
    opened = by_label(text, "traceprobe_agent_connections_total", "event").get("opened", 0)
    assert opened >= 6  # 3 client + 3 server sides


def test_probe_listener_answers_the_daemonsets_exec_probes(agent_proc: Any) -> None:
    """--health-port: /livez and /readyz alone on 127.0.0.1, where the kubelet's exec
    probe (the command the operator renders) finds them; ready once programs run."""
    agent = AgentProc("--health-port", "0")
    agent_proc.append(agent)
    line = next(line for line in agent.stderr if "probes on http://127.0.0.1:" in line)
    port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
    for path in ("/livez", "/readyz"):
        result = subprocess.run(health_check(port, path), capture_output=True, timeout=10)
        assert result.returncode == 0, (path, result.stderr)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as r:
        assert r.read() == b"ok\n"
    with pytest.raises(urllib.error.HTTPError) as missing_path:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics")
    assert missing_path.value.code == 404  # probes only; /metrics is on --metrics-port
