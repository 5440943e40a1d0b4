"""ruff, mypy (strict) and the import-linter contracts, as part of the test command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.tools import REPO

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [
    ["ruff", "check", "."],
    ["mypy"],
    ["lint-imports"],
], ids=["ruff", "mypy", "import-linter"])
def test_gate(command: list[str]) -> None:
    result = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"
