"""Prometheus text as numbers, read with prometheus_client's own parser (values may
be written as floats or in exponent form, so no regex on digits)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Label set -> value, for every sample called `name` (e.g. `x_total`)."""
    found: dict[frozenset[tuple[str, str]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[frozenset(sample.labels.items())] = sample.value
    return found


def by_label(text: str, name: str, label: str) -> dict[str, float]:
    """`label`'s value -> sample value, for a metric with one label of interest."""
    return {dict(labels)[label]: value for labels, value in samples(text, name).items()
            if label in dict(labels)}
