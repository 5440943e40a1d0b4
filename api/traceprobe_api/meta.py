"""Kubernetes building blocks: names, labels, selectors, conditions, durations.

Patterns avoid backslashes (`[.]` instead of an escaped dot) so the same string
is a valid Python regex, Go RE2 pattern and CEL string literal.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import Field

from traceprobe_api.base import ApiModel, ObservedModel
from traceprobe_api.cel import LIST_ATOMIC, KubeList, Rule

# Bounded repeats keep each DNS label and label name within 63 characters.
_DNS_LABEL = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_SUBDOMAIN_PATTERN = f"^{_DNS_LABEL}([.]{_DNS_LABEL})*$"
LABEL_NAME = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = f"^({_DNS_LABEL}([.]{_DNS_LABEL})*/)?{LABEL_NAME}$"
LABEL_VALUE_PATTERN = f"^({LABEL_NAME})?$"
# metav1.Condition's own patterns (apimachinery/pkg/apis/meta/v1/types.go).
CONDITION_TYPE_PATTERN = (
    f"^({_DNS_LABEL}([.]{_DNS_LABEL})*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
REASON_PATTERN = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# Go duration syntax, restricted to whole numbers of ms/s/m/h (e.g. 10s, 1m30s).
DURATION_PATTERN = "^([0-9]+(ms|s|m|h))+$"
_DURATION_PART = re.compile("([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DnsSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
Reason = Annotated[str, Field(min_length=1, max_length=1024, pattern=REASON_PATTERN)]
"""CamelCase, machine-readable cause (e.g. `KernelHeadersMissing`)."""
Message = Annotated[str, Field(max_length=32768)]


def parse_duration(text: str) -> timedelta:
    """Parse the DURATION_PATTERN subset of Go durations (`10s`, `1m30s`, `500ms`)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration like 10s or 1m30s: {text!r}")
    seconds = sum(int(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


LabelKey = Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY_PATTERN)]
"""A label key: an optional DNS-subdomain prefix and `/`, then a name (e.g. `app`)."""

LabelMap = Annotated[dict[str, LabelValue], Field(max_length=64), Rule(
    f"self.all(k, size(k) <= 317 && k.matches('{LABEL_KEY_PATTERN}'))",
    "keys must be label keys: an optional DNS-subdomain prefix and '/', then a name of"
    " alphanumerics, '-', '_' or '.', starting and ending alphanumeric",
    lambda labels: all(len(key) <= 317 and re.fullmatch(LABEL_KEY_PATTERN, key) for key in labels))]
"""Labels as `key: value` pairs (what `matchLabels` and `nodeSelector` hold)."""


class SelectorOperator(StrEnum):
    """How a selector requirement relates a label key to its values."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


_SET_OPERATORS = "['In', 'NotIn']"


class LabelSelectorRequirement(ApiModel):
    """One `matchExpressions` entry: a label key, an operator and values."""

    cel_rules = (
        Rule(f"!(self.operator in {_SET_OPERATORS}) || (has(self.values) && size(self.values) > 0)",
             "values must be non-empty when operator is In or NotIn",
             lambda r: r.operator not in (SelectorOperator.IN, SelectorOperator.NOT_IN)
             or bool(r.values),
             field_path=".values"),
        Rule(f"self.operator in {_SET_OPERATORS} || !has(self.values) || size(self.values) == 0",
             "values must be empty when operator is Exists or DoesNotExist",
             lambda r: r.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
             or not r.values,
             field_path=".values"),
    )

    key: LabelKey
    """The label key the requirement applies to."""
    operator: SelectorOperator
    """In, NotIn, Exists or DoesNotExist."""
    values: Annotated[list[LabelValue], Field(max_length=64), LIST_ATOMIC] | None = None
    """Label values: required for In and NotIn, forbidden for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """A Kubernetes label selector; all requirements must match. `{}` selects everything."""

    # Like metav1.LabelSelector: server-side apply replaces a selector as a whole.
    kube_schema_extra: ClassVar[dict[str, Any]] = {"x-kubernetes-map-type": "atomic"}

    match_labels: LabelMap | None = None
    """Labels that must all be present with exactly these values."""
    match_expressions: Annotated[
        list[LabelSelectorRequirement], Field(max_length=32), LIST_ATOMIC] | None = None
    """Set-based requirements; all must match."""


class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ObservedModel):
    """One aspect of the current state, in metav1.Condition's shape."""

    type: Annotated[str, Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)]
    """CamelCase kind of condition, e.g. `Ready`."""
    status: ConditionStatus
    """True, False or Unknown."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The `.metadata.generation` the condition was computed from."""
    last_transition_time: datetime
    """When `status` last changed."""
    reason: Reason
    """CamelCase, machine-readable cause of the last transition."""
    message: Message
    """Human-readable detail; may be empty."""


Conditions = Annotated[list[Condition], Field(max_length=16), KubeList("map", ("type",))]
