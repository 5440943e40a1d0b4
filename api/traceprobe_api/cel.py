"""Schema annotations that mean the same thing to pydantic and to the API server.

A `Rule` is one CEL `x-kubernetes-validations` entry *and* its Python mirror, so
the message a user reads from `kubectl apply` is the message the operator and
the agent raise when they validate the same object. `KubeList` does the same for
`x-kubernetes-list-type`, whose uniqueness the API server enforces itself.

Both work as `Annotated[...]` metadata on fields; model-wide rules go in a
model's `cel_rules` class variable (see `base.ApiModel`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

VALIDATIONS_KEY = "x-kubernetes-validations"


class _AfterValidator:
    """An `Annotated` marker whose `validate` runs after pydantic's own checks."""

    def validate(self, value: Any) -> Any:
        raise NotImplementedError

    def __get_pydantic_core_schema__(
            self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, handler(source))


@dataclass(frozen=True)
class Rule(_AfterValidator):
    """A CEL rule for the API server with the Python check that mirrors it."""

    rule: str
    """CEL expression over `self` (the annotated field, or the model for `cel_rules`)."""
    message: str
    """Shown to the user verbatim by the API server and by pydantic alike."""
    check: Callable[[Any], bool]
    """Python mirror of `rule`; receives the validated value (or model instance)."""
    field_path: str | None = None
    """Where the API server reports the error, relative to `self` (e.g. `.values`)."""

    def as_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry

    def validate(self, value: Any) -> Any:
        if not self.check(value):
            raise ValueError(self.message)
        return value

    def __get_pydantic_json_schema__(
            self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        add_validations(json_schema, [self])
        return json_schema


def add_validations(json_schema: dict[str, Any], rules: Iterable[Rule]) -> None:
    entries = [rule.as_schema() for rule in rules]
    if entries:
        json_schema.setdefault(VALIDATIONS_KEY, []).extend(entries)


@dataclass(frozen=True)
class KubeList(_AfterValidator):
    """`x-kubernetes-list-type` (+ map keys), with the same uniqueness check in Python.

    The API server forbids `uniqueItems`; a `set` list is its way to say "unique
    scalars", a `map` list says "unique by these keys" (and lets server-side apply
    merge entries by key, as it does for `conditions`).
    """

    list_type: Literal["atomic", "set", "map"]
    keys: tuple[str, ...] = ()
    """Python attribute names of the map keys (map lists only)."""

    def _key(self, item: Any) -> str:
        if self.list_type == "set":
            return str(item)
        return ", ".join(f"{to_camel(key)}={getattr(item, key)!s}" for key in self.keys)

    def validate(self, items: list[Any]) -> list[Any]:
        if self.list_type == "atomic":
            return items
        seen: set[str] = set()
        for item in items:
            key = self._key(item)
            if key in seen:  # worded like the API server's error
                raise ValueError(f"Duplicate value: {key!r}")
            seen.add(key)
        return items

    def __get_pydantic_json_schema__(
            self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["x-kubernetes-list-type"] = self.list_type
        if self.list_type == "map":
            json_schema["x-kubernetes-list-map-keys"] = [to_camel(key) for key in self.keys]
        return json_schema


LIST_SET = KubeList("set")
LIST_ATOMIC = KubeList("atomic")
