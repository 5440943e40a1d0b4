"""Base classes shared by every API model, and what a CRD needs beyond the schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_api.cel import Rule, add_validations

API_GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"


def _schema_extra(schema: dict[str, Any], cls: type[Any]) -> None:
    # Model-wide CEL rules and Kubernetes markers travel with the model's schema.
    add_validations(schema, getattr(cls, "cel_rules", ()))
    schema.update(getattr(cls, "kube_schema_extra", {}))


class ApiModel(BaseModel):
    """Part of a spec: camelCase on the wire, snake_case in Python, unknown fields refused.

    Refusing unknown fields mirrors `kubectl apply`'s strict field validation, so a
    typo fails in Python exactly where it fails at the API server.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,  # attribute docstrings become `kubectl explain` text
        extra="forbid",
        json_schema_extra=_schema_extra,
    )

    cel_rules: ClassVar[tuple[Rule, ...]] = ()
    """Rules over the whole model (`self` is the object); checked here and by the server."""
    kube_schema_extra: ClassVar[dict[str, Any]] = {}
    """Extra `x-kubernetes-*` markers for this model's schema."""

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        for rule in self.cel_rules:
            rule.validate(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, JSON types, unset optionals omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObservedModel(ApiModel):
    """Part of a status or report: one component writes it, another reads it.

    Readers ignore fields they do not know, so an operator and agents of different
    versions keep working during a rolling upgrade (tolerant reader).
    """

    model_config = ConfigDict(extra="ignore")


def default_object(factory: type[ApiModel]) -> Any:
    """A nested object defaulted to `{}` in the schema, so the API server fills its fields."""
    return Field(default_factory=factory, json_schema_extra={"default": {}})


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta that traceprobe reads; the rest is kept as-is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    finalizers: list[str] | None = None


@dataclass(frozen=True)
class PrinterColumn:
    """One `additionalPrinterColumns` entry of `kubectl get`."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str = ""
    priority: int = 0
    """0: always shown; 1: only with `-o wide`."""

    def as_dict(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type,
                                  "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


AGE_COLUMN = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class CrdInfo:
    """Names and presentation of a custom resource (everything but its schema)."""

    plural: str
    singular: str
    scope: Literal["Namespaced", "Cluster"]
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    # Not "traceprobe": a category named like the singular makes
    # `kubectl get traceprobe NAME` ambiguous.
    categories: tuple[str, ...] = ("traceprobe-all",)


class Resource(ApiModel):
    """A whole custom resource object; subclasses add `kind`, `spec`, `status`, `crd`."""

    crd: ClassVar[CrdInfo]

    api_version: Literal["traceprobe.io/v1alpha1"] = "traceprobe.io/v1alpha1"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @classmethod
    def kind_name(cls) -> str:
        kind = cls.model_fields["kind"].default
        assert isinstance(kind, str), f"{cls.__name__} must default `kind`"
        return kind
