"""One way for tests and the harness to wait for the world to get somewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Fatal(Exception):
    """A check saw something that will not get better (a process exited)."""


def fail(message: str) -> bool:
    """Stop a wait_until at once (a check saw a process exit)."""
    raise Fatal(message)


def wait_until(check: Callable[[], Any], timeout: float = 30, what: str = "", *,
               diagnose: Callable[[], str] | None = None, interval: float = 0.3) -> Any:
    """Poll `check` until it returns something truthy and return that. An exception in
    `check` means "not yet" (the last one is reported), except Fatal, which stops at once.
    Timing out raises AssertionError naming `what`, the last value or error, and what
    `diagnose` says."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except Fatal:
            raise
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            extra = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for "
                                 f"{what or check}: last={last!r}{extra}")
        time.sleep(interval)
