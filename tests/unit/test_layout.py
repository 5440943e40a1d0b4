"""The layout rule that keeps the standard library importable (DESIGN §3)."""

from __future__ import annotations

import subprocess
import sys

from harness.tools import REPO


def test_operator_folder_is_not_a_package() -> None:
    assert (REPO / "operator").is_dir()
    assert not (REPO / "operator" / "__init__.py").exists(), (
        "operator/__init__.py would shadow the standard library's operator module")


def test_stdlib_operator_still_imports_from_repo_root() -> None:
    code = "import operator, json; operator.itemgetter(0); print(operator.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert str(REPO) not in out, f"'operator' resolved inside the repo: {out}"


def test_each_source_folder_holds_its_own_package() -> None:
    import traceprobe_agent
    import traceprobe_api
    import traceprobe_operator

    for module, folder in ((traceprobe_operator, "operator/traceprobe_operator"),
                           (traceprobe_agent, "node_agent/traceprobe_agent"),
                           (traceprobe_api, "api/traceprobe_api")):
        assert folder in str(module.__file__)
