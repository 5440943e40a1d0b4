"""Where kopf keeps its handling state for probes: nowhere that can make a probe too big.

kopf's default storages write annotations: its handlers' progress and, as "the
last handled configuration", a copy of the whole object but its status. The API
server caps all annotations of an object together at 256 KiB, and a copy of a large
probe (a big annotation, or a selector near the schema's maxima, twice when kubectl
apply keeps its own copy) does not fit: every write is refused and kopf retries it
forever. So:

- the diff base is the generation the operator last accepted, read from the probe's
  own Accepted condition (status, written anyway) and remembered in memory for the
  handling it gave up on; `metadata.generation` moves with every spec change and
  only then, which is exactly when a probe must be accepted again;
- handler progress stays in this process's memory: handlers wait and retry inside
  themselves (a restarted or standby replica simply handles the object afresh, as
  it would resume it), so kopf never sleeps on a delay that needs a wake-up write.

kopf then writes nothing on a probe but its finalizer. Probes handled by earlier
versions carry the annotation storages' keys; `LEGACY_ANNOTATIONS` names them so
that the operator can drop them (their Accepted condition already tells where they
are, so nothing is handled again).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, cast

import kopf

from traceprobe_operator.conditions import find_condition

#: Annotations kopf's annotation storages wrote with our prefix, before this module.
LEGACY_ANNOTATIONS = tuple(f"traceprobe.io/{key}" for key in (
    "last-handled-configuration", "kopf-managed", "touch-dummy", "accept", "detach"))
#: Objects whose state is remembered at most; the oldest are forgotten first. Each
#: entry is a few hundred bytes; a forgotten one only means handling it afresh.
MAX_REMEMBERED = 50_000


def _uid(body: kopf.Body) -> str:
    return str(body.metadata.uid or f"{body.metadata.namespace}/{body.metadata.name}")


def _generation(body: kopf.Body) -> int:
    return int(body.metadata.get("generation") or 1)


def accepted_generation(body: Any) -> int | None:
    """The generation the probe's Accepted condition was decided for, if any."""
    found = find_condition((body.get("status") or {}).get("conditions"), "Accepted")
    generation = found.get("observedGeneration") if found else None
    return generation if isinstance(generation, int) else None


class _Bounded(OrderedDict[Any, Any]):
    def remember(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > MAX_REMEMBERED:
            self.popitem(last=False)


class GenerationDiffBase(kopf.DiffBaseStorage):
    """The essence of a probe is its generation; the base, the one last handled."""

    def __init__(self) -> None:
        super().__init__()
        self._handled = _Bounded()

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        # Under `spec` so that the handlers' field="spec" filter sees the change.
        return cast(kopf.BodyEssence, {"spec": {"generation": _generation(body)}})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        known = [g for g in (self._handled.get(_uid(body)), accepted_generation(body))
                 if g is not None]
        if not known:
            return None
        return cast(kopf.BodyEssence, {"spec": {"generation": max(known)}})

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        generation = (cast(dict[str, Any], essence).get("spec") or {}).get("generation")
        if isinstance(generation, int):
            self._handled.remember(_uid(body), generation)

    def forget(self, body: kopf.Body) -> None:
        self._handled.pop(_uid(body), None)


class MemoryProgressStorage(kopf.ProgressStorage):
    """Handler progress in this process only; nothing is written to the object."""

    def __init__(self) -> None:
        super().__init__()
        self._records = _Bounded()

    def fetch(self, *, key: kopf.HandlerId, body: kopf.Body) -> kopf.ProgressRecord | None:
        found = self._records.get((_uid(body), key))
        return cast(kopf.ProgressRecord, copy.deepcopy(found)) if found is not None else None

    def store(self, *, key: kopf.HandlerId, record: kopf.ProgressRecord, body: kopf.Body,
              patch: kopf.Patch) -> None:
        self._records.remember((_uid(body), key), copy.deepcopy(dict(record)))

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records.pop((_uid(body), key), None)

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        # kopf touches an object to wake itself after a delay; our handlers never ask
        # for one (they retry inside), so there is nothing to write.
        return None

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return copy.deepcopy(essence)


def legacy_annotations(body: Any) -> list[str]:
    """Which of the earlier storages' annotations the object still carries."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return [key for key in LEGACY_ANNOTATIONS if key in annotations]
