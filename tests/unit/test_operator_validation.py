from __future__ import annotations

from traceprobe_operator.validation import spec_problem


def test_invalid_spec_is_reported_as_a_condition_not_a_crash() -> None:
    # Objects stored before a schema tightening can hold what today's models refuse.
    problem = spec_problem("TraceProbe", {"spec": {"interval": "10 parsecs",
                                                  "limits": {"maxConnections": 5}}})
    assert problem is not None
    assert "spec.interval" in problem and "spec.limits.maxConnections" in problem
    assert spec_problem("TraceProbe", {"spec": {}}) is None
    assert "unknown kind" in str(spec_problem("Gadget", {"spec": {}}))
