"""Property-based fuzzing (hypothesis) of the agent's inputs: any text for any flag or
environment variable, and any command line, ends in settings or the agent's own
UsageError — one line naming the flag or variable — never another exception."""

from __future__ import annotations

import contextlib
import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traceprobe_agent.__main__ import parse
from traceprobe_agent.settings import SOURCES, AgentSettings, UsageError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Lone surrogates too: a command line of bytes that are not UTF-8 arrives so.
texts = st.text(st.characters(exclude_categories=()), max_size=40) | st.sampled_from(
    ["", "-1", "0", "65535", "65536", "1e3", "inf", "nan", "/", "/dev/null", "/proc/self",
     "a:1", "[::1]:1", "127.0.0.1", "::", "connections", "tcp:tcp_probe", " 5 ", "\n", "\0"])
FLAGGED = [(name, flag) for name, (flag, _) in SOURCES.items() if flag]
VARIABLES = [(name, variable) for name, (_, variable) in SOURCES.items() if variable]
# What each setting needs beside it to be in force at all (else it is refused as unused).
CONTEXT = {"probes": ["--standalone"], "max_connections": ["--standalone"],
           "map_ca_file": ["--map-endpoint=map:4317"]}


def _outcome(argv: list[str], environ: dict[str, str]) -> AgentSettings | str:
    try:
        return parse(argv, environ)
    except UsageError as exc:
        line = str(exc)
        assert line.strip() and "\n" not in line and "\r" not in line, repr(line)
        return line


@FUZZ
@given(field=st.sampled_from(FLAGGED), value=texts)
def test_any_text_for_a_flag_is_settings_or_a_line_naming_it(field: tuple[str, str],
                                                               value: str) -> None:
    name, flag = field
    argv = ["--node-name=n1", *CONTEXT.get(name, []), f"{flag}={value}"]
    outcome = _outcome(argv, {})
    if isinstance(outcome, str):
        assert flag in outcome, outcome
    else:
        assert name in outcome.model_fields_set


@FUZZ
@given(field=st.sampled_from(VARIABLES), value=texts)
def test_any_text_in_a_variable_is_settings_or_a_line_naming_it(field: tuple[str, str],
                                                                 value: str) -> None:
    name, variable = field
    outcome = _outcome([], {variable: value, **({} if name == "node_name" else
                                                {"NODE_NAME": "n1"})})
    if isinstance(outcome, str):
        assert variable in outcome, outcome
    else:
        assert value == "" or name in outcome.model_fields_set  # empty: unset


flags = st.sampled_from(sorted({f for _, f in FLAGGED} | {"--nope", "-x", "--"}))
argument = st.one_of(texts, flags, st.builds(lambda f, v: f"{f}={v}", flags, texts))


@FUZZ
@given(argv=st.lists(argument, max_size=6))
def test_any_command_line_is_settings_or_one_line(argv: list[str]) -> None:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _outcome(argv, {"NODE_NAME": "n1"})
    except SystemExit as exc:  # --help (or an abbreviation of it): printed, exit 0
        assert exc.code == 0 and any(a.startswith("-h") or a.startswith("--h") for a in argv)
