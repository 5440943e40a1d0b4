"""Fuzzing (hypothesis) the `traceprobe` CLI's inputs: any text for any flag, for
KUBECONFIG, and any kubeconfig file content ends in settings, a Cluster, or the CLI's
own one-line usage error — never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traceprobe_cli.kube import Cluster
from traceprobe_cli.settings import INPUTS, CliSettings, UsageError, parse_args

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
# Text users type, plus the shapes that reach the interesting branches.
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["0", "-1", "0.5", "1", "nan", "inf", "-inf", "1e308", "1_0", " 5 ",
                     "30s", "5m", "25h", "0ms", "shop", "shop,pay", "a,,b", "ns/name",
                     "a/b/c", "table", "wide", "yaml", "", "\x00", "é", "x" * 600]),
    st.from_regex(r"[0-9.eE+-]{1,8}(ms|s|m|h)?", fullmatch=True))

# Each text field, as a flag of a command (`--flag=VALUE` keeps values like "--help"
# or "-1" from being read as options).
FLAG_FIELDS = [("map", "--kubeconfig", "kubeconfig"), ("map", "--context", "context"),
               ("status", "--namespace", "namespace"), ("map", "--map-service", "map_service"),
               ("status", "--request-timeout", "request_timeout"), ("map", "--ns", "ns"),
               ("map", "--probe", "probe"), ("map", "--min-rate", "min_rate"),
               ("map", "--search", "search"), ("map", "--window", "window"),
               ("map", "--output", "output"), ("status", "--output", "output"),
               ("map", "--interval", "interval"), ("status", "--stale-after", "stale_after")]


def _usage_line(exc: UsageError, name: str) -> None:
    text = str(exc)
    assert "\n" not in text and "\r" not in text and text.strip(), text
    assert name in text, text


@pytest.mark.parametrize("command, flag, field", FLAG_FIELDS,
                         ids=[f"{c} {f}" for c, f, _ in FLAG_FIELDS])
@FUZZ
@given(value=texts)
def test_any_text_for_a_flag_is_settings_or_a_usage_error(
        command: str, flag: str, field: str, value: str) -> None:
    extra = ["--watch"] if field == "interval" else []
    try:
        result = parse_args([command, *extra, f"{flag}={value}"], {})
    except UsageError as exc:
        _usage_line(exc, flag if field != "output" else "--output")
        return
    assert isinstance(result, CliSettings) and result.command == command


@pytest.mark.parametrize("field", sorted(set(INPUTS) - {"command", "watch"}))
@FUZZ
@given(value=st.one_of(texts, st.floats(), st.integers(), st.none(), st.booleans(),
                       st.lists(st.text(max_size=5), max_size=3)))
def test_any_value_for_a_field_of_the_settings_object(field: str, value: Any) -> None:
    for command in ("map", "status"):
        try:
            CliSettings.load({"command": command, "watch": True, field: value}
                             if command == "map" else {"command": command, field: value})
        except UsageError as exc:
            _usage_line(exc, INPUTS[field].flag)


@FUZZ
@given(value=texts)
def test_any_kubeconfig_variable(value: str) -> None:
    try:
        result = parse_args(["status"], {"KUBECONFIG": value})
    except UsageError as exc:
        _usage_line(exc, "KUBECONFIG")
        return
    assert result.kubeconfig_source == ("KUBECONFIG", value)


# Keys of a kubeconfig, without `exec` and `auth-provider`: those would run commands.
KEYS = ["apiVersion", "kind", "clusters", "users", "contexts", "current-context", "name",
        "cluster", "user", "context", "server", "token", "tokenFile", "namespace",
        "certificate-authority", "certificate-authority-data", "client-certificate-data",
        "client-key-data", "insecure-skip-tls-verify", "tls-server-name", "proxy-url",
        "username", "password"]
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12),
                   st.sampled_from(["test", "u", "https://127.0.0.1:9", "ht!tp::", "/nope"]))
trees = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=20)


def _wrapped(part: Any) -> dict[str, Any]:
    """A kubeconfig whose cluster and user are `part`: the loader gets past the top."""
    return {"apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": part}],
            "users": [{"name": "u", "user": part}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "u"}}]}


@FUZZ
@given(content=st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode),
                         trees.map(lambda t: yaml.safe_dump(t).encode()),
                         trees.map(lambda t: yaml.safe_dump(_wrapped(t)).encode())),
       context=st.one_of(st.none(), st.sampled_from(["test", "other"])))
def test_any_kubeconfig_file_is_a_cluster_or_a_usage_error(content: bytes,
                                                           context: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config"
        path.write_bytes(content)
        argv = [f"--kubeconfig={path}", *([f"--context={context}"] if context else []),
                "status"]
        try:
            cluster = Cluster.connect(parse_args(argv, {}))
        except UsageError as exc:
            _usage_line(exc, "--context" if context == "other" and "--context" in str(exc)
                        else "--kubeconfig")
            return
        assert cluster.server.startswith(("http://", "https://"))
