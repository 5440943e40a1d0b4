"""When the status timer accepts a probe again, and which probes get agents (pure)."""

from __future__ import annotations

from typing import Any

from traceprobe_operator.accepting import HANDLER_GRACE_SECONDS, accept_due
from traceprobe_operator.daemonset import is_active
from traceprobe_operator.retries import ProbeState


def probe(generation: int = 2, accepted: tuple[str, str, int] | None = None,
          deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web", "namespace": "shop", "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    body: dict[str, Any] = {"kind": "TraceProbe", "metadata": meta, "spec": {}}
    if accepted:
        status, reason, observed = accepted
        body["status"] = {"conditions": [{"type": "Accepted", "status": status,
                                          "reason": reason, "observedGeneration": observed}]}
    return body


def test_a_generation_kopf_has_not_accepted_is_the_timers_after_a_grace() -> None:
    state = ProbeState()
    assert not accept_due(probe(accepted=("True", "Valid", 1)), state, 100.0)
    assert not accept_due(probe(), state, 100.0 + HANDLER_GRACE_SECONDS - 1)
    assert accept_due(probe(), state, 100.0 + HANDLER_GRACE_SECONDS)
    assert not accept_due(probe(accepted=("True", "Valid", 2)), state, 200.0)
    assert state.pending_since is None  # the next generation waits its own grace


def test_what_may_clear_by_itself_is_checked_again_with_backoff_the_rest_is_not() -> None:
    state = ProbeState()
    refused = probe(accepted=("False", "UpdateRefused", 2))
    assert accept_due(refused, state, 0.0)
    state.backoff.failed(0.0)
    assert not accept_due(refused, state, 4.0) and accept_due(refused, state, 5.0)
    assert not accept_due(probe(accepted=("False", "InvalidSpec", 2)), ProbeState(), 1e9)


def test_an_accepted_probe_is_not_accepted_again_until_its_spec_changes() -> None:
    # Only its spec decides the verdict: nothing outside it to look at again.
    assert not accept_due(probe(accepted=("True", "Valid", 2)), ProbeState(), 1e9)


def test_agents_run_for_accepted_or_undecided_probes_and_the_verdict_being_written() -> None:
    key = ("TraceProbe", "shop", "web")
    assert is_active(probe(accepted=("True", "Valid", 1)), {})
    assert is_active(probe(), {})  # its own acceptance decides soon; never drop it meanwhile
    assert not is_active(probe(accepted=("False", "InvalidSpec", 2)), {})
    assert is_active(probe(accepted=("False", "InvalidSpec", 2)), {key: True})
    assert not is_active(probe(accepted=("True", "Valid", 2)), {key: False})
    assert not is_active(probe(accepted=("True", "Valid", 2), deleting=True), {key: True})
