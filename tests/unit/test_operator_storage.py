"""kopf's handling state for probes, kept out of the probes (their generation and this
process's memory), and the bounded retries around it (pure)."""

from __future__ import annotations

from typing import Any

import kopf

from traceprobe_operator.retries import ApiBackoffs, Backoff, Said
from traceprobe_operator.storage import (
    LEGACY_ANNOTATIONS,
    GenerationDiffBase,
    MemoryProgressStorage,
    legacy_annotations,
)


def body(generation: int = 3, accepted: int | None = None, uid: str = "u1",
         annotations: dict[str, str] | None = None) -> kopf.Body:
    raw: dict[str, Any] = {"metadata": {"name": "web", "namespace": "shop", "uid": uid,
                                        "generation": generation,
                                        "annotations": annotations or {}},
                           "spec": {"interval": "10s"}}
    if accepted is not None:
        raw["status"] = {"conditions": [{"type": "Accepted", "status": "True",
                                         "observedGeneration": accepted}]}
    return kopf.Body(raw)  # type: ignore[arg-type]


def test_the_diff_base_is_the_generation_last_accepted() -> None:
    storage = GenerationDiffBase()
    assert storage.fetch(body=body()) is None  # never accepted: a creation
    assert storage.fetch(body=body(accepted=3)) == storage.build(body=body())  # nothing new
    assert storage.fetch(body=body(accepted=2)) != storage.build(body=body())  # a spec change
    # Handled but not recorded (the handler gave up): not handled again on every event.
    storage.store(body=body(), patch=kopf.Patch(), essence=storage.build(body=body()))
    assert storage.fetch(body=body(accepted=2)) == storage.build(body=body())
    storage.forget(body())
    assert storage.fetch(body=body()) is None


def test_nothing_is_written_to_the_object_whatever_its_size() -> None:
    big = body(annotations={"big": "x" * (256 * 1024 - 3)})
    patch = kopf.Patch()
    diff_base, progress = GenerationDiffBase(), MemoryProgressStorage()
    diff_base.store(body=big, patch=patch, essence=diff_base.build(body=big))
    progress.store(key=kopf.HandlerId("accept"), record={"retries": 1}, body=big, patch=patch)
    progress.touch(body=big, patch=patch, value="2024-01-01T00:00:00")
    assert not patch
    assert progress.fetch(key=kopf.HandlerId("accept"), body=big) == {"retries": 1}
    progress.purge(key=kopf.HandlerId("accept"), body=big, patch=patch)
    assert progress.fetch(key=kopf.HandlerId("accept"), body=big) is None


def test_earlier_versions_annotations_are_recognised() -> None:
    old = {"traceprobe.io/last-handled-configuration": "{}", "traceprobe.io/kopf-managed": "yes",
           "traceprobe.io/agent-config-hash": "keep", "team": "keep"}
    assert legacy_annotations(body(annotations=old)) == [
        "traceprobe.io/last-handled-configuration", "traceprobe.io/kopf-managed"]
    assert all(key.startswith("traceprobe.io/") for key in LEGACY_ANNOTATIONS)


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(first=5, cap=30)
    assert [backoff.failed(100) for _ in range(5)] == [5, 10, 20, 30, 30]
    assert not backoff.due(129) and backoff.due(130)
    backoff.succeeded()
    assert backoff.due(0)


def test_a_failure_is_said_once_until_it_changes() -> None:
    said = Said()
    assert said.new("x", "422 refused") and not said.new("x", "422 refused")
    assert said.new("x", "503 unavailable") and said.clear("x") and not said.clear("x")


def test_api_requests_are_retried_without_end_but_not_hot() -> None:
    first = list(zip(range(12), ApiBackoffs(), strict=False))
    assert [d for _, d in first][-3:] == [30.0, 30.0, 30.0]
    assert list(zip(range(2), ApiBackoffs(), strict=False)) == [(0, 1.0), (1, 1.0)]  # anew
