from __future__ import annotations

from traceprobe_operator.validation import probe_problem, spec_problem


def test_invalid_spec_is_reported_as_a_condition_not_a_crash() -> None:
    # Objects stored before a schema tightening can hold what today's models refuse.
    problem = spec_problem("TraceProbe", {"spec": {"interval": "10 parsecs",
                                                  "limits": {"maxConnections": 5}}})
    assert problem is not None
    assert "spec.interval" in problem and "spec.limits.maxConnections" in problem
    assert spec_problem("TraceProbe", {"spec": {}}) is None
    assert "unknown kind" in str(spec_problem("Gadget", {"spec": {}}))


def test_a_spec_setting_the_removed_export_is_invalid_naming_the_field() -> None:
    # The API server prunes it from stored objects; one that reaches the operator
    # anyway is refused like any unknown field, not accepted and ignored.
    body = {"spec": {"export": {"endpoint": "https://otlp.example.com:4317"}}}
    problem = probe_problem("TraceProbe", body)
    assert problem is not None and problem.reason == "InvalidSpec"
    assert problem.message == "spec.export: Extra inputs are not permitted"
    assert probe_problem("ClusterTraceProbe", {"spec": {}}) is None
