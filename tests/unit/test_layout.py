"""The layout: one top-level folder per deployable component plus the shared API, and
the rule that keeps the standard library importable (docs/design.md)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harness.tools import REPO, SOURCE_FOLDERS


def test_operator_folder_is_not_a_package() -> None:
    assert (REPO / "operator").is_dir()
    assert not (REPO / "operator" / "__init__.py").exists(), (
        "operator/__init__.py would shadow the standard library's operator module")


def test_stdlib_operator_still_imports_from_repo_root() -> None:
    code = "import operator, json; operator.itemgetter(0); print(operator.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert str(REPO) not in out, f"'operator' resolved inside the repo: {out}"


FOLDERS = SOURCE_FOLDERS


@pytest.mark.parametrize("package", sorted(FOLDERS))
def test_each_source_folder_holds_its_own_package(package: str) -> None:
    module = importlib.import_module(package)
    assert Path(str(module.__file__)).parent == REPO / FOLDERS[package] / package
    assert not (REPO / FOLDERS[package] / "__init__.py").exists(), (
        f"{FOLDERS[package]}/ is a source folder, not a package")


def test_operator_folder_holds_only_the_operator() -> None:
    packages = {p.name for p in (REPO / "operator").iterdir() if (p / "__init__.py").exists()}
    assert packages == {"traceprobe_operator"}


QUERY_MODEL = {"traceprobe_map", "traceprobe_map.views", "traceprobe_map.snapshot",
               "traceprobe_map.request_tally",
               "traceprobe_map.graph_exports"}


def test_the_cli_contract_forbids_every_map_module_but_the_query_model() -> None:
    """A module added to the map is outside the CLI's reach until listed here on purpose."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]
    (contract,) = [c for c in contracts if c.get("source_modules") == ["traceprobe_cli"]
                   and any(m.startswith("traceprobe_map.") for m in c["forbidden_modules"])]
    folder = REPO / "service_map" / "traceprobe_map"
    modules = {f"traceprobe_map.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}
    assert set(contract["forbidden_modules"]) == modules - QUERY_MODEL
