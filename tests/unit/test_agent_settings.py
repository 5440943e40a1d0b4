"""The agent's inputs (traceprobe_agent.settings, traceprobe_agent.__main__): every flag
and environment variable, each bad value run through the real program as a
subprocess — exit 2, one line naming the flag or variable and the value, never a
traceback — and good values parsed to typed settings (flag > variable > default).
An API server away at start is waited for, with backoff and a clear line, while the
agent stays live; tests/cluster/test_agent_start.py sees it reach a real one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.tools import REPO
from harness.waiting import wait_until
from traceprobe_agent.__main__ import parse
from traceprobe_agent.settings import SOURCES, AgentSettings, UsageError

AGENT = [sys.executable, "-m", "traceprobe_agent"]
# What the agent reads that a developer's shell may have set.
READ_ENV = ("NODE_NAME", "TRACEPROBE_MAP_ENDPOINT", "TRACEPROBE_BPF_DIR", "BCC_KERNEL_SOURCE",
            "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good CA bundle, garbage of several kinds, and a kubeconfig for a closed port."""
    tmp = tmp_path_factory.mktemp("agent-settings")
    ca = tmp / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=test-ca", "-keyout", str(tmp / "ca.key"), "-out", str(ca)],
                   check=True, capture_output=True)
    garbage = tmp / "garbage"
    garbage.write_text("garbage: [\n")
    binary = tmp / "binary"
    binary.write_bytes(b"\x00\xff\xfe\x80")
    scalar = tmp / "scalar"
    scalar.write_text("just a string\n")
    empty = tmp / "empty"
    empty.write_text("")
    token = tmp / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln\n")
    no_url = tmp / "no-url.kubeconfig"  # YAML and a kubeconfig, but no server to call
    no_url.write_text("apiVersion: v1\nkind: Config\ncurrent-context: x\n"
                      "clusters: [{name: c, cluster: {server: 'not a url'}}]\n"
                      "users: [{name: u, user: {token: t}}]\n"
                      "contexts: [{name: x, context: {cluster: c, user: u}}]\n")
    headers, half = tmp / "headers", tmp / "half-headers"  # the shape BCC needs; half of it
    for tree, files in ((headers, ("linux/kconfig.h", "generated/autoconf.h")),
                        (half, ("generated/autoconf.h",))):
        for name in files:
            (tree / "include" / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / "include" / name).write_text("")
    with socket.socket() as s:  # a port nothing listens on (closed again at once)
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = tmp / "dead.kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{dead_port}', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n")
    return {"ca": ca, "garbage": garbage, "binary": binary, "scalar": scalar, "empty": empty,
            "token": token,
            "no_url": no_url, "dead": dead, "dir": tmp, "home": tmp, "headers": headers,
            "half": half}


def _env(files: dict[str, Path], extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in READ_ENV}
    # No ~/.kube/config either: only what a case sets.
    return {**env, "HOME": str(files["home"]), "PYTHONUNBUFFERED": "1", **extra}


def _fill(text: str, files: dict[str, Path]) -> str:
    return text.format(**{k: str(v) for k, v in files.items()})


# (argv, environment, the name the line must say, a part of the value it must show)
BAD: list[tuple[list[str], dict[str, str], str, str]] = [
    (["--standalone=yes"], {}, "--standalone", "yes"),
    (["--node-name", "Bad_Name"], {}, "--node-name", "'Bad_Name'"),
    (["--node-name="], {}, "--node-name", "''"),
    (["--node-name", "a" * 254], {}, "--node-name", "'aaaa"),
    ([], {"NODE_NAME": "UPPER.case"}, "NODE_NAME", "'UPPER.case'"),
    (["--interval", "inf"], {}, "--interval", "'inf'"),
    (["--interval", "nan"], {}, "--interval", "'nan'"),
    (["--interval=-nan"], {}, "--interval", "'-nan'"),
    (["--interval", "0"], {}, "--interval", "'0'"),
    (["--interval", "301"], {}, "--interval", "'301'"),
    (["--interval", "10s"], {}, "--interval", "'10s'"),
    (["--interval"], {}, "--interval", "expected one argument"),
    (["--standalone", "--probes", "bogus,connections"], {}, "--probes", "'bogus,connections'"),
    (["--standalone", "--probes", ","], {}, "--probes", "','"),
    (["--probes", "connections"], {}, "--probes", "'connections'"),
    (["--standalone", "--max-connections", "-1"], {}, "--max-connections", "'-1'"),
    (["--standalone", "--max-connections", "100"], {}, "--max-connections", "'100'"),
    (["--standalone", "--max-connections", "1e9"], {}, "--max-connections", "'1e9'"),
    (["--max-connections", "4096"], {}, "--max-connections", "'4096'"),
    (["--metrics-address", "node-a"], {}, "--metrics-address", "'node-a'"),
    (["--metrics-address", "999.1.1.1"], {}, "--metrics-address", "'999.1.1.1'"),
    (["--standalone", "--metrics-address", "0.0.0.0"], {}, "--metrics-address", "'0.0.0.0'"),
    (["--metrics-port", "-1", "--metrics-address", "10.0.0.1"], {}, "--metrics-address",
     "'10.0.0.1'"),
    (["--metrics-port", "70000"], {}, "--metrics-port", "'70000'"),
    (["--metrics-port", "-2"], {}, "--metrics-port", "'-2'"),
    (["--metrics-port", "http"], {}, "--metrics-port", "'http'"),
    (["--health-port", "65536"], {}, "--health-port", "'65536'"),
    (["--health-port", "-5"], {}, "--health-port", "'-5'"),
    (["--health-port", "9464"], {}, "--health-port", "'9464'"),  # --metrics-port's default
    (["--disable-tracepoint", "tcp:nope"], {}, "--disable-tracepoint", "'tcp:nope'"),
    (["--disable-tracepoint", "tcp:tcp_probe", "--disable-tracepoint", ""], {},
     "--disable-tracepoint", "''"),
    (["--core", "ebpf"], {}, "--core", "'ebpf'"),
    (["--core", "sock_ops", "--disable-tracepoint", "tcp:tcp_probe"], {},
     "--disable-tracepoint", "tcp:tcp_probe"),
    (["--cgroup-root", "kubepods"], {}, "--cgroup-root", "'kubepods'"),
    (["--cgroup-root", "/a/../b"], {}, "--cgroup-root", "'/a/../b'"),
    (["--map-endpoint", "no-port"], {}, "--map-endpoint", "'no-port'"),
    (["--map-endpoint", "map:0"], {}, "--map-endpoint", "'map:0'"),
    (["--map-endpoint", "map:99999"], {}, "--map-endpoint", "'map:99999'"),
    (["--map-endpoint", "::1:4317"], {}, "--map-endpoint", "'::1:4317'"),
    (["--map-endpoint="], {}, "--map-endpoint", "''"),
    ([], {"TRACEPROBE_MAP_ENDPOINT": "map:http"}, "TRACEPROBE_MAP_ENDPOINT", "'map:http'"),
    (["--standalone", "--map-endpoint", "map:4317"], {}, "--map-endpoint", "'map:4317'"),
    (["--standalone"], {"TRACEPROBE_MAP_ENDPOINT": "map:4317"}, "TRACEPROBE_MAP_ENDPOINT",
     "'map:4317'"),
    (["--map-endpoint", "map:4317", "--map-ca-file", "/nonexistent.pem"], {}, "--map-ca-file",
     "'/nonexistent.pem'"),
    (["--map-endpoint", "map:4317", "--map-ca-file", "{garbage}"], {}, "--map-ca-file",
     "garbage'"),
    (["--map-endpoint", "map:4317", "--map-ca-file", "{dir}"], {}, "--map-ca-file", "{dir}"),
    (["--map-ca-file", "{ca}"], {}, "--map-ca-file", "ca.pem'"),  # no endpoint to use it for
    (["--standalone", "--map-ca-file", "{ca}"], {}, "--map-ca-file", "ca.pem'"),
    (["--map-endpoint", "map:4317", "--map-token-file", "{token}"], {}, "--map-token-file",
     "--map-ca-file"),  # a token never crosses the network in clear text
    (["--map-endpoint", "map:4317", "--map-ca-file", "{ca}", "--map-token-file",
      "/nonexistent"], {}, "--map-token-file", "not a readable token file"),
    (["--map-endpoint", "map:4317", "--map-ca-file", "{ca}", "--map-token-file", "{empty}"],
     {}, "--map-token-file", "does not hold one token"),
    (["--map-endpoint", "map:4317", "--map-ca-file", "{ca}", "--map-token-file", "{dir}"],
     {}, "--map-token-file", "not a regular file"),
    (["--standalone", "--map-token-file", "{token}"], {}, "--map-token-file", "cluster mode"),
    (["--standalone", "--print-records"], {}, "--print-records", ""),
    (["--print-records=1"], {}, "--print-records", "'1'"),
    (["--verbose=1"], {}, "--verbose", "'1'"),
    (["--frobnicate"], {}, "--frobnicate", "unrecognized"),
    (["--standalone"], {"TRACEPROBE_BPF_DIR": "{dir}"}, "TRACEPROBE_BPF_DIR", "{dir}"),
    (["--standalone"], {"TRACEPROBE_BPF_DIR": "/nonexistent"}, "TRACEPROBE_BPF_DIR",
     "'/nonexistent'"),
    (["--standalone"], {"BCC_KERNEL_SOURCE": "{dir}"}, "BCC_KERNEL_SOURCE", "{dir}"),
    (["--standalone"], {"BCC_KERNEL_SOURCE": "{half}"}, "BCC_KERNEL_SOURCE", "{half}"),
    # Credentials, loaded before anything else in cluster mode.
    (["--node-name", "n1"], {"KUBECONFIG": "{garbage}"}, "KUBECONFIG", "{garbage}"),
    (["--node-name", "n1"], {"KUBECONFIG": "{binary}"}, "KUBECONFIG", "{binary}"),
    (["--node-name", "n1"], {"KUBECONFIG": "{scalar}"}, "KUBECONFIG", "{scalar}"),
    (["--node-name", "n1"], {"KUBECONFIG": "{empty}"}, "KUBECONFIG", "{empty}"),
    (["--node-name", "n1"], {"KUBECONFIG": "{dir}"}, "KUBECONFIG", "{dir}"),
    (["--node-name", "n1"], {"KUBECONFIG": "{no_url}"}, "KUBECONFIG", "{no_url}"),
    (["--node-name", "n1"], {"KUBECONFIG": "/nonexistent/kubeconfig"}, "KUBECONFIG",
     "/nonexistent/kubeconfig"),
    (["--node-name", "n1"], {}, "kubeconfig", "/.kube/config"),  # none at all
]


def _run(argv: list[str], env: dict[str, str], files: dict[str, Path]) -> Any:
    return subprocess.run([*AGENT, *(_fill(a, files) for a in argv)], cwd=REPO,
                          env=_env(files, {k: _fill(v, files) for k, v in env.items()}),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("argv,env,name,value", BAD,
                         ids=[" ".join([*a, *(f"{k}={v}" for k, v in e.items())])[:60]
                              for a, e, _, _ in BAD])
def test_a_bad_value_is_one_line_naming_it_and_exit_2(
        files: dict[str, Path], argv: list[str], env: dict[str, str], name: str,
        value: str) -> None:
    result = _run(argv, env, files)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("traceprobe-agent: ") and name in line, line
    assert _fill(value, files) in line, line
    assert not result.stdout  # nothing started, so nothing printed


def test_the_table_covers_every_flag_and_variable() -> None:
    named = {name for _, _, name, _ in BAD} | {
        n for argv, _, _, _ in BAD for a in argv for n in [a.split("=")[0]] if n.startswith("--")}
    named |= {v for _, env, _, _ in BAD for v in env}
    wanted = {n for pair in SOURCES.values() for n in pair if n} | {"KUBECONFIG"}
    assert wanted <= named, sorted(wanted - named)
    assert set(SOURCES) == set(AgentSettings.model_fields)


def test_good_values_parse_to_typed_settings(files: dict[str, Path]) -> None:
    env = {"NODE_NAME": "env-node", "TRACEPROBE_MAP_ENDPOINT": "env-map:1",
           "TRACEPROBE_BPF_DIR": str(REPO / "bpf"), "BCC_KERNEL_SOURCE": str(files["headers"])}
    s = parse(["--node-name", "flag-node", "--interval", "2.5", "--metrics-address", "::1",
               "--metrics-port", "0", "--health-port", "19465", "--disable-tracepoint",
               "tcp:tcp_probe", "--disable-tracepoint", "tcp:tcp_receive_reset",
               "--cgroup-root", "/kubepods.slice", "--map-endpoint", "[::1]:4317",
               "--map-ca-file", str(files["ca"]), "--map-token-file", str(files["token"]),
               "--print-records", "--verbose"], env)
    assert (s.node_name, s.interval_seconds, s.metrics_address) == ("flag-node", 2.5, "::1")
    assert (s.metrics_port, s.health_port, s.cgroup_root) == (0, 19465, "/kubepods.slice")
    assert s.disabled_tracepoints == {"tcp:tcp_probe", "tcp:tcp_receive_reset"}
    assert (s.map_endpoint, s.map_ca_file) == ("[::1]:4317", str(files["ca"]))
    assert s.map_token_file == str(files["token"])
    assert s.print_records and s.verbose and not s.standalone
    assert (s.bpf_dir, s.kernel_source) == (str(REPO / "bpf"), str(files["headers"]))
    # A variable stands in for its flag; an empty one counts as unset.
    s = parse([], env)
    assert (s.node_name, s.map_endpoint) == ("env-node", "env-map:1")
    s = parse([], {"NODE_NAME": "", "TRACEPROBE_MAP_ENDPOINT": ""})
    assert s.node_name == os.uname().nodename.lower() and s.map_endpoint is None
    assert (s.interval_seconds, s.metrics_port, s.health_port) == (10.0, 9464, -1)
    s = parse(["--standalone", "--probes", " bytes , rtt ", "--max-connections", "1024",
               "--metrics-address", "127.0.0.2", "--node-name", "n1"], {})
    assert s.probes == {"bytes", "rtt"} and s.max_connections == 1024


def test_parse_raises_only_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"^--interval: 'inf' is not a number of seconds"):
        parse(["--interval=inf", "--node-name=n1"], {})
    with pytest.raises(UsageError, match="unrecognized arguments: --nope"):
        parse(["--nope"], {})


def test_a_port_in_use_names_its_flag(files: dict[str, Path]) -> None:
    """Standalone listens before it loads a program; cluster mode before it waits for
    the API server: neither gets far enough to need root or an API server."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for argv, env, flag in (
                (["--standalone", "--metrics-port", port], {}, "--metrics-port"),
                (["--node-name=n1", "--metrics-port", port], {"KUBECONFIG": "{dead}"},
                 "--metrics-port"),
                (["--node-name=n1", "--metrics-port=-1", "--health-port", port],
                 {"KUBECONFIG": "{dead}"}, "--health-port")):
            result = _run(argv, env, files)
            assert result.returncode == 2, result.stderr
            assert "Traceback" not in result.stderr
            last = result.stderr.strip().splitlines()[-1]
            assert last == (f"traceprobe-agent: {flag}: cannot listen on 127.0.0.1:{port} "
                            "([Errno 98] Address already in use)"), result.stderr


@pytest.fixture
def waiting_agent(files: dict[str, Path]) -> Iterator[subprocess.Popen[str]]:
    """Cluster mode, every setting good, the API server away (a closed port)."""
    env = {"KUBECONFIG": "{dead}", "TRACEPROBE_BPF_DIR": str(REPO / "bpf"),
           "BCC_KERNEL_SOURCE": "{headers}"}
    argv = ["--node-name", "n1", "--interval", "2.5", "--metrics-port", "0",
            "--metrics-address", "127.0.0.1", "--health-port", "0", "--cgroup-root", "/none",
            "--disable-tracepoint", "tcp:tcp_probe", "--map-endpoint", "127.0.0.1:9",
            "--map-ca-file", "{ca}", "--print-records"]
    proc = subprocess.Popen([*AGENT, *(_fill(a, files) for a in argv)], cwd=REPO,
                            env=_env(files, {k: _fill(v, files) for k, v in env.items()}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_an_api_server_away_at_start_is_retried_with_backoff_while_live(
        waiting_agent: subprocess.Popen[str]) -> None:
    proc = waiting_agent
    assert proc.stderr is not None
    lines: list[str] = []

    def seen(text: str) -> bool:
        while text not in "".join(lines):
            line = proc.stderr.readline() if proc.stderr else ""
            if not line:
                raise AssertionError(f"agent exited: {''.join(lines)}")
            lines.append(line)
        return True

    seen("retrying in 2s")  # 1s, then 2s: backing off
    log = "".join(lines)
    server = next(line for line in lines if "API server" in line)
    assert "API server https://127.0.0.1:" in server and "unreachable (" in server
    assert "Connection refused); retrying in 1s" in server
    assert "urllib3" not in log and "Traceback" not in log  # one line per try, no retries
    livez = next(line for line in lines if "probes on " in line).split()[-1]
    with urllib.request.urlopen(livez, timeout=5) as r:  # the kubelet would keep it
        assert r.status == 200
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: proc.poll() is not None, timeout=15, what="exit on SIGTERM")
    rest = proc.stderr.read()
    assert proc.returncode == 0 and "Traceback" not in rest, rest


@pytest.mark.parametrize("listen", ["loopback", "hostIP", "all"])
def test_the_operators_daemonset_args_are_accepted(listen: str) -> None:
    """What the operator renders, as the kubelet expands it ($(NODE_NAME), $(HOST_IP))."""
    from traceprobe_operator.agent_workload import render_daemonset
    from traceprobe_operator.settings import AgentPodSettings, OperatorSettings

    pod = AgentPodSettings.model_validate({"metrics": {"listen": listen, "port": 19464},
                                           "healthPort": 19465})
    ds = render_daemonset(OperatorSettings(agent_pod=pod), [])
    [container] = ds["spec"]["template"]["spec"]["containers"]
    expanded = {"NODE_NAME": "node-1.example", "HOST_IP": "10.0.0.7"}
    argv = [a.replace("$(NODE_NAME)", expanded["NODE_NAME"])
            .replace("$(HOST_IP)", expanded["HOST_IP"]) for a in container["args"]]
    s = parse(argv, {})
    assert (s.node_name, s.metrics_port, s.health_port) == ("node-1.example", 19464, 19465)
    assert s.metrics_address == {"loopback": "127.0.0.1", "hostIP": "10.0.0.7",
                                 "all": "0.0.0.0"}[listen]
    assert s.map_endpoint == OperatorSettings().map_endpoint and not s.standalone
