"""--standalone with every setting it takes at a good value other than its default
(flags and variables): the real agent loads, serves and reports as told. The bad
values are tests/unit/test_agent_settings.py's: they stop it before anything loads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

from harness.metrics import by_label
from harness.tools import REPO
from harness.waiting import wait_until
from traceprobe_agent.kernel_headers import find_kernel_headers


def test_good_values_load_and_are_used(bpf_ready: None) -> None:
    env = {**{k: v for k, v in os.environ.items() if k != "TRACEPROBE_MAP_ENDPOINT"},
           "NODE_NAME": "tp-standalone-env", "TRACEPROBE_BPF_DIR": str(REPO / "bpf"),
           **_whole_header_tree()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "traceprobe_agent", "--standalone", "--interval", "1.5",
         "--probes", "connections,bytes", "--max-connections", "4096",
         "--metrics-address", "127.0.0.1", "--metrics-port", "0", "--health-port", "0",
         "--disable-tracepoint", "tcp:tcp_probe", "--cgroup-root", "/"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith('{"ready"'):
            line = proc.stderr.readline()
            assert line, f"agent exited early: {''.join(lines)}"
            lines.append(line)
        metrics = next(line for line in lines if "/metrics" in line).split()[-1]
        livez = next(line for line in lines if "probes on " in line).split()[-1]
        with urllib.request.urlopen(livez, timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(metrics, timeout=5) as r:
            text = r.read().decode()
        assert by_label(text, "traceprobe_agent_map_capacity", "map")["conns"] == 4096
        programs = json.loads(lines[-1])["programs"]
        assert not [p for p in programs if "tcp_probe" in p]  # no rtt: not asked for
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"hello")
            with server.accept()[0] as accepted:
                assert accepted.recv(5) == b"hello"
        wait_until(lambda: _drained(metrics), timeout=15, what="one interval drained")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    mine = [r for r in records if r.get("remotePort") == port and r["role"] == "client"]
    assert mine and {r["node"] for r in mine} == {"tp-standalone-env"}  # NODE_NAME
    assert sum(r["bytesSent"] for r in mine) == 5  # bytes were asked for


def _whole_header_tree() -> dict[str, str]:
    """BCC_KERNEL_SOURCE at this kernel's tree when it is whole (Debian splits it in
    two, which only /lib/modules' build and source links join): else left unset."""
    headers = find_kernel_headers()
    tree = headers.path if headers else None
    whole = tree is not None and all((tree / "include" / f).is_file()
                                     for f in ("linux/kconfig.h", "generated/autoconf.h"))
    return {"BCC_KERNEL_SOURCE": str(tree)} if whole else {}


def _drained(metrics: str) -> bool:
    with urllib.request.urlopen(metrics, timeout=5) as r:
        text = r.read().decode()
    return by_label(text, "traceprobe_agent_connections_total", "event").get("opened", 0) >= 2
