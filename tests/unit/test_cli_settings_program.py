"""The `traceprobe` CLI's inputs, run as a real program: every flag and variable refuses a
bad value with exit 2 and one line naming it, good values get as far as the API server
(here a closed port: exit 1, "cannot reach"), --help states units and ranges, and --watch
sends one request per interval."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.procs import free_port
from harness.tools import REPO

CLI = [sys.executable, "-m", "traceprobe_cli"]
GARBAGE: dict[str, bytes] = {
    "unclosed.yaml": b"clusters: [unclosed\n",
    "string.yaml": b"just a string\n",
    "empty.yaml": b"",
    "binary.yaml": b"\x00\xff\xfe\x01",
    "wrong-types.yaml": b"apiVersion: v1\nkind: Config\nclusters: 5\n",
    "cluster-is-text.yaml": yaml.safe_dump({
        "current-context": "t", "contexts": [{"name": "t", "context": {
            "cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": "text"}], "users": [{"name": "u", "user": "x"}],
    }).encode(),
}


def _kubeconfig(server: str, **cluster: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": server, **cluster}}],
            "users": [{"name": "u", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "u"}}]}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig naming a closed port (`closed.kubeconfig`), and broken ones."""
    base = tmp_path_factory.mktemp("cli")
    (base / "home").mkdir()
    server = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    (base / "closed.kubeconfig").write_text(yaml.safe_dump(_kubeconfig(server)))
    (base / "no-ca-file.kubeconfig").write_text(yaml.safe_dump(
        _kubeconfig(server, **{"certificate-authority": str(base / "absent-ca.crt")})))
    (base / "bad-server.kubeconfig").write_text(yaml.safe_dump(_kubeconfig("ht!tp:://x y")))
    for name, content in GARBAGE.items():
        (base / name).write_bytes(content)
    (base / "a-directory").mkdir()
    return base


def _run(files: Path, argv: list[str], env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, in a home without ~/.kube and no pod environment."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
    full = [a.replace("{dir}", str(files)) for a in argv]
    extra = {k: v.replace("{dir}", str(files)) for k, v in (env or {}).items()}
    return subprocess.run([*CLI, *full], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**base, "HOME": str(files / "home"), **extra})


KC = "--kubeconfig={dir}/closed.kubeconfig"
# (argv, environment, the flag or variable the line must name, a part of the value)
BAD: list[tuple[list[str], dict[str, str], str, str]] = [
    (["status"], {}, "--kubeconfig", "~/.kube/config"),
    (["--kubeconfig=", "status"], {}, "--kubeconfig", "''"),
    (["--kubeconfig={dir}/absent", "status"], {}, "--kubeconfig", "absent"),
    (["--kubeconfig={dir}/a-directory", "map"], {}, "--kubeconfig", "a-directory"),
    (["--kubeconfig={dir}/no-ca-file.kubeconfig", "status"], {}, "--kubeconfig", "absent-ca"),
    (["--kubeconfig={dir}/bad-server.kubeconfig", "status"], {}, "--kubeconfig", "ht!tp"),
    *[([f"--kubeconfig={{dir}}/{name}", "status"], {}, "--kubeconfig", name)
      for name in GARBAGE],
    (["status"], {"KUBECONFIG": ""}, "KUBECONFIG", "''"),
    (["status"], {"KUBECONFIG": "{dir}/absent:{dir}/gone"}, "KUBECONFIG", "gone"),
    (["map"], {"KUBECONFIG": "{dir}/unclosed.yaml"}, "KUBECONFIG", "unclosed"),
    ([KC, "--context=", "status"], {}, "--context", "''"),
    ([KC, "--context=elsewhere", "status"], {}, "--context", "elsewhere"),
    ([KC, "-n", "Shop", "map"], {}, "--namespace", "Shop"),
    ([KC, "--namespace=a_b", "status"], {}, "--namespace", "a_b"),
    ([KC, "map", "-n", "x" * 64], {}, "--namespace", "xxx"),
    ([KC, "--map-service=9map", "map"], {}, "--map-service", "9map"),
    ([KC, "map", "--map-service", "Map"], {}, "--map-service", "Map"),
    ([KC, "--request-timeout=0", "status"], {}, "--request-timeout", "'0'"),
    ([KC, "--request-timeout=-1", "map"], {}, "--request-timeout", "-1"),
    ([KC, "status", "--request-timeout", "0.05"], {}, "--request-timeout", "0.05"),
    ([KC, "status", "--request-timeout", "601"], {}, "--request-timeout", "601"),
    ([KC, "status", "--request-timeout", "soon"], {}, "--request-timeout", "soon"),
    ([KC, "status", "--request-timeout", "nan"], {}, "--request-timeout", "nan"),
    ([KC, "map", "--ns", "Shop"], {}, "--ns", "Shop"),
    ([KC, "map", "--ns", "shop,,pay"], {}, "--ns", "''"),
    ([KC, "map", "--ns="], {}, "--ns", "''"),
    ([KC, "map", "--probe", "a/b/c"], {}, "--probe", "a/b/c"),
    ([KC, "map", "--probe", "Shop"], {}, "--probe", "Shop"),
    ([KC, "map", "--min-rate=-1"], {}, "--min-rate", "-1"),
    ([KC, "map", "--min-rate", "inf"], {}, "--min-rate", "inf"),
    ([KC, "map", "--min-rate", "lots"], {}, "--min-rate", "lots"),
    ([KC, "map", "--search", "a\tb"], {}, "--search", "a\\tb"),
    ([KC, "map", "--search", "x" * 513], {}, "--search", "xxx"),
    ([KC, "map", "--window", "soon"], {}, "--window", "soon"),
    ([KC, "map", "--window", "0"], {}, "--window", "'0'"),
    ([KC, "map", "--window", "500ms"], {}, "--window", "500ms"),
    ([KC, "map", "--window", "25h"], {}, "--window", "25h"),
    ([KC, "map", "-o", "yaml"], {}, "--output", "yaml"),
    ([KC, "status", "--output", "wide"], {}, "--output", "wide"),
    ([KC, "map", "--watch=yes"], {}, "--watch", "yes"),
    ([KC, "map", "--watch", "--interval", "0"], {}, "--interval", "'0'"),
    ([KC, "map", "--watch", "--interval", "0.5"], {}, "--interval", "0.5"),
    ([KC, "map", "--watch", "--interval", "-2"], {}, "--interval", "-2"),
    ([KC, "map", "--watch", "--interval", "3601"], {}, "--interval", "3601"),
    ([KC, "map", "--watch", "--interval", "often"], {}, "--interval", "often"),
    ([KC, "map", "--interval", "2"], {}, "--interval", "--watch"),
    ([KC, "status", "--stale-after", "0"], {}, "--stale-after", "'0'"),
    ([KC, "status", "--stale-after", "86401"], {}, "--stale-after", "86401"),
    ([KC, "status", "--stale-after", "old"], {}, "--stale-after", "old"),
    ([KC], {}, "COMMAND", "required"),
    ([KC, "show"], {}, "COMMAND", "show"),
    ([KC, "map", "--colour"], {}, "--colour", "unrecognized"),
    ([KC, "status", "--interval", "5"], {}, "--interval", "unrecognized"),
]
# Good values: accepted, so the run reaches the (closed) API server and says so.
GOOD: list[tuple[list[str], dict[str, str]]] = [
    ([KC, "status"], {}),
    ([KC, "map"], {}),
    (["status"], {"KUBECONFIG": "{dir}/absent:{dir}/closed.kubeconfig"}),
    ([KC, "--context", "test", "-n", "tp", "--map-service", "map-1", "map"], {}),
    ([KC, "status", "--request-timeout", "0.1", "-o", "json", "--stale-after", "1"], {}),
    ([KC, "status", "--request-timeout", "600", "--stale-after", "86400"], {}),
    ([KC, "map", "--ns", "shop,pay", "--ns", "kube-system", "--probe", "shop/shop"], {}),
    ([KC, "map", "--probe", "platform.v2", "--min-rate", "0", "--search", "pay ments"], {}),
    ([KC, "map", "--min-rate", "1e6", "--window", "1s", "-o", "wide"], {}),
    ([KC, "map", "--window", "24h", "-o", "dot"], {}),
    ([KC, "map", "--window", "90", "-o", "mermaid"], {}),
    ([KC, "map", "-w", "--interval", "1", "-o", "json"], {}),
    ([KC, "map", "--watch", "--interval", "3600"], {}),
]


@pytest.fixture(scope="module")
def results(files: Path) -> Iterator[dict[int, subprocess.CompletedProcess[str]]]:
    """Every case at once (a few in parallel): each is a fresh interpreter."""
    cases = [(argv, env) for argv, env, _, _ in BAD] + GOOD
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda case: _run(files, *case), cases))
    yield dict(enumerate(done))


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("traceprobe: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("index", range(len(BAD)),
                         ids=[" ".join(case[0][1:]) + " " + " ".join(case[1])
                              for case in BAD])
def test_bad_input_exits_2_with_one_line_naming_it(
        results: dict[int, subprocess.CompletedProcess[str]], index: int) -> None:
    _, _, name, value = BAD[index]
    result = results[index]
    assert result.returncode == 2, (result.returncode, result.stderr)
    line = _one_line(result)
    assert name in line and value in line, line
    assert result.stdout == ""


@pytest.mark.parametrize("index", range(len(GOOD)),
                         ids=[" ".join(case[0][1:]) + " " + " ".join(case[1])
                              for case in GOOD])
def test_good_input_reaches_the_api_server(
        results: dict[int, subprocess.CompletedProcess[str]], index: int) -> None:
    result = results[len(BAD) + index]
    assert result.returncode == 1, (result.returncode, result.stderr)
    line = _one_line(result)
    assert "cannot reach the API server https://127.0.0.1:" in line
    assert "connection refused" in line and "--kubeconfig, --context" in line
    assert "No TraceProbes" not in result.stdout and "No edges" not in result.stdout


def test_help_states_units_ranges_and_the_variable(files: Path) -> None:
    top = _run(files, ["--help"])
    map_help = " ".join(_run(files, ["map", "--help"]).stdout.split())
    status_help = " ".join(_run(files, ["status", "--help"]).stdout.split())
    assert top.returncode == 0 and "$KUBECONFIG" in top.stdout
    assert "--request-timeout SECONDS" in top.stdout and "0.1 to 600" in top.stdout
    assert "seconds from 1 to 3600, with --watch (default 5)" in map_help
    assert "at least 1 s" in map_help and "from 1s to 24h" in map_help
    assert "seconds from 1 to 86400 (default 90)" in status_help


class _CountingApiServer:
    """A plain-HTTP stand-in for the API server's service proxy that counts map requests."""

    def __init__(self) -> None:
        import http.server
        import threading

        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = (b'{"cluster": "c", "generatedAt": "2025-01-01T00:00:00Z",'
                        b' "windowSeconds": 60, "nodes": [], "edges": []}')
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_watch_sends_one_request_per_interval(files: Path, tmp_path: Path) -> None:
    counting = _CountingApiServer()
    with counting as server:
        kubeconfig = tmp_path / "counting.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(_kubeconfig(server)))
        flood = _run(files, [f"--kubeconfig={kubeconfig}", "map", "--watch", "--interval",
                             "0"])
        assert flood.returncode == 2 and counting.requests == 0, flood.stderr
        proc = subprocess.Popen([*CLI, f"--kubeconfig={kubeconfig}", "map", "--watch",
                                 "--interval", "1"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO)
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # the first frame's header: watching has begun
            assert first.startswith("Every 1s: traceprobe map"), first
            started, seen = time.monotonic(), counting.requests
            time.sleep(3.5)  # shapes the workload: three and a half intervals
            sent = counting.requests - seen
            elapsed = time.monotonic() - started
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert 1 <= sent <= elapsed + 1, (sent, elapsed)
