"""Missing prerequisites: a skip with a reason locally, a failure in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    """Stop this test because `reason` is missing (fails under CI=true)."""
    if in_ci():
        pytest.fail(f"CI=true and a prerequisite is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        missing(f"{what} needs root (run the tests as root: sudo make test)")
