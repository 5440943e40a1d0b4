"""The agent's start against the real API server: good values for every cluster-mode
setting start it and it reports (a NodeReport); an API server away at start is
retried with backoff, one clear line a try, and used as soon as it answers (through
a relay opened later on the kubeconfig's port). Bad values are tests/unit's
(test_agent_settings.py): they never get this far."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from harness.install import NAMESPACE, install
from harness.procs import ManagedProcess, free_port
from harness.tools import REPO
from harness.waiting import fail, wait_until
from harness.world import OperatorWorld


class Relay:
    """TCP from a loopback port to the API server's, opened when the test says."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", port))
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


@pytest.fixture(scope="module")
def world(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    install(control_plane)
    # Fresh CRDs may answer a moment with a Retry-After status, which urllib3 sleeps
    # on in the agent's watch threads; an agent stopped then aborts at exit (a daemon
    # thread waking during interpreter shutdown, an existing defect): start once
    # they serve lists.
    wait_until(lambda: control_plane.kubectl("get", "traceprobes,clustertraceprobes", "-A",
                                             check=False).returncode == 0,
               timeout=30, what="the probe CRDs serving lists")
    w = OperatorWorld(control_plane, tmp_path_factory.mktemp("agent-start"))
    yield w
    w.stop()


def _agent(world: Any, name: str, node: str, kubeconfig: Path) -> ManagedProcess:
    env = {**{k: v for k, v in os.environ.items()
              if k not in ("NODE_NAME", "TRACEPROBE_MAP_ENDPOINT", "BCC_KERNEL_SOURCE")},
           "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1",
           "TRACEPROBE_BPF_DIR": str(REPO / "bpf")}
    with socket.socket() as s:  # a map nobody runs: the sender queues and retries
        s.bind(("127.0.0.1", 0))
        map_port = s.getsockname()[1]
    proc = ManagedProcess(name, [
        sys.executable, "-m", "traceprobe_agent", "--node-name", node, "--interval", "1",
        "--metrics-address", "127.0.0.1", "--metrics-port", "0", "--health-port", "0",
        "--cgroup-root", f"/{node}", "--disable-tracepoint", "tcp:tcp_probe",
        "--map-endpoint", f"127.0.0.1:{map_port}", "--print-records"],
        world.tmp / f"{name}.log", env=env, cwd=REPO)
    world.replicas.append(proc)
    return proc


def _reported(world: Any, agent: ManagedProcess, node: str) -> Any:
    if not agent.alive():
        fail(f"agent exited:\n{agent.log_tail()}")
    return world.node_report(node)


def test_good_values_start_and_report(world: Any) -> None:
    kubeconfig = world.cp.serviceaccount_kubeconfig(NAMESPACE, "traceprobe-agent")
    agent = _agent(world, "agent-good", "tpstart-good", kubeconfig)
    wait_until(lambda: _reported(world, agent, "tpstart-good"), timeout=60,
               what="the agent's NodeReport", diagnose=agent.log_tail)
    agent.stop()
    log = agent.log.read_text()
    assert agent.popen.returncode == 0, log
    assert "Traceback" not in log and "unreachable" not in log, log


def test_an_api_server_away_at_start_is_waited_for(world: Any) -> None:
    real = urlsplit(world.cp.server)
    port = free_port()
    config = yaml.safe_load(
        world.cp.serviceaccount_kubeconfig(NAMESPACE, "traceprobe-agent").read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    kubeconfig = world.tmp / "away.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    agent = _agent(world, "agent-away", "tpstart-away", kubeconfig)
    server = f"API server https://127.0.0.1:{port}"
    wait_until(lambda: "retrying in 2s" in agent.log.read_text(), timeout=30,
               what="two tries, backing off", diagnose=agent.log_tail)
    assert world.node_report("tpstart-away") is None
    relay = Relay(port, (real.hostname or "127.0.0.1", real.port or 443))
    try:
        wait_until(lambda: _reported(world, agent, "tpstart-away"), timeout=60,
                   what="the NodeReport once the API server answers",
                   diagnose=agent.log_tail)
        log = agent.log.read_text()
        tries = [line for line in log.splitlines() if f"{server} unreachable (" in line]
        assert tries and "Connection refused); retrying in 1s" in tries[0], log
        assert f"{server} answers" in log, log
        assert "Traceback" not in log and "urllib3" not in log, log
    finally:
        agent.stop()
        relay.close()
    assert agent.popen.returncode == 0, agent.log_tail()
