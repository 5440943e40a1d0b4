"""The operator's flags, environment and kubeconfig, as `python -m traceprobe_operator`
sees them: each bad value is one line naming the input and exit status 2, never a
traceback; good values start the operator (here against an unreachable API server,
which it keeps retrying; tests/cluster/test_operator_inputs.py starts it for real)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.tools import REPO
from traceprobe_operator import settings as operator_settings
from traceprobe_operator.__main__ import parse_args
from traceprobe_operator.settings import OperatorSettings, SettingsError

ENV_NAMES = sorted(getattr(operator_settings, n) for n in dir(operator_settings)
                   if n.endswith("_ENV"))
UNREACHABLE = "https://127.0.0.1:1"


def _kubeconfig(path: Path, server: str = UNREACHABLE) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}]}))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("kubeconfigs")
    (tmp / "garbage").write_bytes(b"\x00\xff\xfe not a kubeconfig")
    (tmp / "not-yaml").write_text("clusters: [oops\n")
    (tmp / "a-list").write_text("- 1\n- 2\n")
    (tmp / "empty").write_text("")
    (tmp / "a-directory").mkdir()
    return {"good": str(_kubeconfig(tmp / "good")),
            "bad-server": str(_kubeconfig(tmp / "bad-server", server="::::nonsense")),
            **{p.name: str(p) for p in tmp.iterdir() if p.name not in ("good", "bad-server")},
            "missing": str(tmp / "does-not-exist")}


def _env(files: dict[str, str], **overrides: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ENV_NAMES and k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    return {**base, "KUBECONFIG": files["good"], "PYTHONUNBUFFERED": "1", **overrides}


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "traceprobe_operator", *argv], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)


#: (what is wrong, argv, environment, what the one line must name)
BAD: list[tuple[str, list[str], dict[str, str], str]] = [
    ("unknown flag", ["--bogus"], {}, "--bogus"),
    ("abbreviated flag", ["--verb"], {}, "--verb"),
    ("flag with a value", ["--verbose=yes"], {}, "--verbose"),
    ("stray argument", ["run"], {}, "run"),
    ("namespace not a name", [], {"TRACEPROBE_NAMESPACE": "Traceprobe_System"},
     "TRACEPROBE_NAMESPACE='Traceprobe_System'"),
    ("namespace empty", [], {"TRACEPROBE_NAMESPACE": ""}, "TRACEPROBE_NAMESPACE=''"),
    ("namespace too long", [], {"TRACEPROBE_NAMESPACE": "n" * 64}, "TRACEPROBE_NAMESPACE="),
    ("image with a space", [], {"TRACEPROBE_AGENT_IMAGE": "ghcr.io/x/agent :1"},
     "TRACEPROBE_AGENT_IMAGE="),
    ("image with a bad tag", [], {"TRACEPROBE_AGENT_IMAGE": "ghcr.io/x/agent:-1"},
     "TRACEPROBE_AGENT_IMAGE="),
    ("image empty", [], {"TRACEPROBE_AGENT_IMAGE": ""}, "TRACEPROBE_AGENT_IMAGE=''"),
    ("account not a name", [], {"TRACEPROBE_AGENT_SERVICE_ACCOUNT": "Agent!"},
     "TRACEPROBE_AGENT_SERVICE_ACCOUNT='Agent!'"),
    ("map endpoint without port", [], {"TRACEPROBE_MAP_ENDPOINT": "map.svc"},
     "TRACEPROBE_MAP_ENDPOINT='map.svc'"),
    ("map endpoint port 0", [], {"TRACEPROBE_MAP_ENDPOINT": "map.svc:0"},
     "TRACEPROBE_MAP_ENDPOINT='map.svc:0'"),
    ("map endpoint port too big", [], {"TRACEPROBE_MAP_ENDPOINT": "map.svc:65536"},
     "TRACEPROBE_MAP_ENDPOINT='map.svc:65536'"),
    # The same check as the agent's (traceprobe_api.addresses): what the operator
    # accepts, the agents it deploys accept too.
    ("map endpoint not an IPv4 address", [], {"TRACEPROBE_MAP_ENDPOINT": "999.1.1.1:4317"},
     "TRACEPROBE_MAP_ENDPOINT='999.1.1.1:4317'"),
    ("map endpoint with a newline", [], {"TRACEPROBE_MAP_ENDPOINT": "map.svc:4317\n"},
     "TRACEPROBE_MAP_ENDPOINT="),
    ("map endpoint a URL", [], {"TRACEPROBE_MAP_ENDPOINT": "https://map.svc:4317"},
     "TRACEPROBE_MAP_ENDPOINT="),
    ("map endpoint bad IPv6", [], {"TRACEPROBE_MAP_ENDPOINT": "[::zz]:4317"},
     "TRACEPROBE_MAP_ENDPOINT="),
    ("map CA secret not a name", [], {"TRACEPROBE_MAP_CA_SECRET": "Map_TLS"},
     "TRACEPROBE_MAP_CA_SECRET='Map_TLS'"),
    ("map CA secret empty", [], {"TRACEPROBE_MAP_CA_SECRET": ""}, "TRACEPROBE_MAP_CA_SECRET=''"),
    ("map token audience with a space", [], {"TRACEPROBE_MAP_CA_SECRET": "map-tls",
                                             "TRACEPROBE_MAP_TOKEN_AUDIENCE": "a b"},
     "TRACEPROBE_MAP_TOKEN_AUDIENCE='a b'"),
    ("map token audience without TLS", [], {"TRACEPROBE_MAP_TOKEN_AUDIENCE": "map"},
     "TRACEPROBE_MAP_TOKEN_AUDIENCE='map': expected TRACEPROBE_MAP_CA_SECRET"),
    ("detach timeout not a number", [], {"TRACEPROBE_DETACH_TIMEOUT_SECONDS": "soon"},
     "TRACEPROBE_DETACH_TIMEOUT_SECONDS='soon'"),
    ("detach timeout zero", [], {"TRACEPROBE_DETACH_TIMEOUT_SECONDS": "0"},
     "TRACEPROBE_DETACH_TIMEOUT_SECONDS='0'"),
    ("detach timeout negative", [], {"TRACEPROBE_DETACH_TIMEOUT_SECONDS": "-5"},
     "TRACEPROBE_DETACH_TIMEOUT_SECONDS='-5'"),
    ("detach timeout too long", [], {"TRACEPROBE_DETACH_TIMEOUT_SECONDS": "3601"},
     "TRACEPROBE_DETACH_TIMEOUT_SECONDS='3601'"),
    ("detach timeout infinite", [], {"TRACEPROBE_DETACH_TIMEOUT_SECONDS": "inf"},
     "TRACEPROBE_DETACH_TIMEOUT_SECONDS='inf'"),
    ("detach timeout NaN", [], {"TRACEPROBE_DETACH_TIMEOUT_SECONDS": "nan"},
     "TRACEPROBE_DETACH_TIMEOUT_SECONDS='nan'"),
    ("stale after too short", [], {"TRACEPROBE_REPORT_STALE_SECONDS": "9.5"},
     "TRACEPROBE_REPORT_STALE_SECONDS='9.5'"),
    ("stale after too long", [], {"TRACEPROBE_REPORT_STALE_SECONDS": "1e9"},
     "TRACEPROBE_REPORT_STALE_SECONDS='1e9'"),
    ("stale after empty", [], {"TRACEPROBE_REPORT_STALE_SECONDS": ""},
     "TRACEPROBE_REPORT_STALE_SECONDS=''"),
    ("agent pod not JSON", [], {"TRACEPROBE_AGENT_POD": "{tolerations:"},
     "TRACEPROBE_AGENT_POD is not JSON"),
    ("agent pod empty", [], {"TRACEPROBE_AGENT_POD": ""}, "TRACEPROBE_AGENT_POD is not JSON"),
    ("agent pod a list", [], {"TRACEPROBE_AGENT_POD": "[]"}, "TRACEPROBE_AGENT_POD is not valid"),
    ("agent pod deep", [], {"TRACEPROBE_AGENT_POD": "[" * 100_000},
     "TRACEPROBE_AGENT_POD is not JSON"),
    ("agent pod huge number", [], {"TRACEPROBE_AGENT_POD": '{"healthPort": 1' + "0" * 5000 + "}"},
     "TRACEPROBE_AGENT_POD is not JSON"),
    ("agent pod bad port", [], {"TRACEPROBE_AGENT_POD": '{"healthPort": 70000}'},
     "at 'healthPort'"),
]
BAD_KUBECONFIGS = ["garbage", "not-yaml", "a-list", "empty", "a-directory", "bad-server",
                   "missing"]


@pytest.fixture(scope="module")
def bad_runs(files: dict[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every bad input, each in its own process, run side by side."""
    cases = {name: (argv, _env(files, **env)) for name, argv, env, _ in BAD}
    cases |= {f"kubeconfig {k}": ([], _env(files, KUBECONFIG=files[k]))
              for k in BAD_KUBECONFIGS}
    cases["KUBECONFIG empty, no ~/.kube/config"] = ([], _env(files, KUBECONFIG="",
                                                            HOME=files["a-directory"]))
    with ThreadPoolExecutor(8) as pool:
        done = dict(zip(cases, pool.map(lambda c: _run(*c), cases.values()), strict=True))
    return done


def _one_line_exit_2(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("traceprobe-operator: ")
    return lines[0]


def test_the_table_covers_every_variable_of_the_settings() -> None:
    named = {var for _, _, env, _ in BAD for var in env}
    assert named == set(ENV_NAMES), "each variable needs bad values in BAD"


@pytest.mark.parametrize("case,argv,env,names", BAD, ids=[c[0] for c in BAD])
def test_a_bad_flag_or_variable_is_one_line_and_exit_2(
        bad_runs: dict[str, subprocess.CompletedProcess[str]], case: str, argv: list[str],
        env: dict[str, str], names: str) -> None:
    line = _one_line_exit_2(bad_runs[case])
    assert names in line
    assert "expected" in line or "the only flags" in line, line


@pytest.mark.parametrize("which", [*BAD_KUBECONFIGS, "empty KUBECONFIG"])
def test_an_unusable_kubeconfig_is_one_line_and_exit_2(
        bad_runs: dict[str, subprocess.CompletedProcess[str]], files: dict[str, str],
        which: str) -> None:
    if which == "empty KUBECONFIG":
        line = _one_line_exit_2(bad_runs["KUBECONFIG empty, no ~/.kube/config"])
        assert "KUBECONFIG=''" in line and "no such file" in line
        return
    line = _one_line_exit_2(bad_runs[f"kubeconfig {which}"])
    assert f"KUBECONFIG={files[which]!r}" in line, line


@pytest.fixture
def started(files: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    log = tmp_path / "operator.log"
    env = _env(files, TRACEPROBE_NAMESPACE="obs", TRACEPROBE_AGENT_IMAGE=(
        "registry.example.com:5000/tp/agent:1.2.3@sha256:" + "a" * 64),
        TRACEPROBE_AGENT_SERVICE_ACCOUNT="platform.agent",
        TRACEPROBE_MAP_ENDPOINT="[fd00::1]:14317",
        TRACEPROBE_DETACH_TIMEOUT_SECONDS="0.5", TRACEPROBE_REPORT_STALE_SECONDS="3600",
        TRACEPROBE_AGENT_POD='{"healthPort": 1000, "metrics": {"port": 1001}}')
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "traceprobe_operator", "--verbose"],
                                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                text=True)
    yield proc, log
    proc.kill()
    proc.wait(20)


def test_good_values_start_and_an_unreachable_api_server_is_retried(
        started: tuple[subprocess.Popen[str], Path]) -> None:
    proc, log = started
    deadline = time.monotonic() + 30
    while "Request attempt #3" not in log.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    text = log.read_text()
    assert proc.poll() is None, text[-3000:]
    assert "Activity 'configure' succeeded" in text
    assert "failed; will retry" in text and "Traceback" not in text


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(var=st.sampled_from(ENV_NAMES), value=st.text(max_size=80))
def test_any_value_of_a_variable_is_accepted_or_a_settings_error(var: str, value: str) -> None:
    try:
        OperatorSettings.from_env({var: value})
    except SettingsError as exc:
        message = str(exc)
        assert var in message and "\n" not in message
        assert len(message) < 2000


@FUZZ
@given(argv=st.lists(st.text(max_size=20).filter(
    lambda a: not a.startswith("-h") and a != "--help"), max_size=3))
def test_any_argv_is_parsed_or_a_settings_error(argv: list[str]) -> None:
    try:
        parse_args(argv)
    except SettingsError as exc:
        assert "\n" not in str(exc)
