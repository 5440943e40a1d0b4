"""crds/examples: valid ones round-trip through the models, invalid ones are refused by them.

The same files go to the real API server in tests/cluster/test_crds.py, so the
models and the generated schema are held to the same examples.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from harness.tools import REPO
from traceprobe_api.resources import parse

EXAMPLES = REPO / "crds" / "examples"
VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))


def expectation(path: Path) -> str:
    found: list[str] = re.findall(r"^# expect: (.+)$", path.read_text(), re.MULTILINE)
    assert len(found) == 1, f"{path.name}: needs exactly one '# expect: <server message>' line"
    return found[0].strip()


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def test_examples_cover_every_kind_and_many_rules() -> None:
    assert {load(p)["kind"] for p in VALID} == {"TraceProbe", "ClusterTraceProbe", "NodeReport"}
    assert len(INVALID) >= 15


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_round_trips(path: Path) -> None:
    doc = load(path)
    obj = parse(doc)
    assert obj.model_dump(mode="json", by_alias=True, exclude_unset=True) == doc


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_refused_by_the_models(path: Path) -> None:
    expected = expectation(path)
    with pytest.raises(ValidationError) as refused:
        parse(load(path))
    if " ... " in expected:  # a CEL rule: the models say it in the server's words
        assert expected.split(" ... ")[-1] in str(refused.value)
