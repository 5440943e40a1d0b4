"""Generate the CRDs in crds/ from the pydantic models (the models are the source of truth).

Pydantic emits JSON Schema; the API server wants a *structural* OpenAPI v3
schema: every node typed, no `$ref`, no `anyOf` for optionals, no
`additionalProperties: false`, no `uniqueItems` (list types say it instead).
This module rewrites the one into the other and fails loudly on anything it
does not know how to translate, rather than emit a schema the server rejects
or, worse, reads differently.

    python -m traceprobe_api.crd_schema --write crds/   # regenerate
    python -m traceprobe_api.crd_schema --check crds/   # exit 1 on drift
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from traceprobe_api import API_GROUP, API_VERSION
from traceprobe_api.base import API_GROUP_VERSION, Resource
from traceprobe_api.resources import RESOURCES

HEADER = ("# Generated from traceprobe_api by `python -m traceprobe_api.crd_schema --write crds/`."
          "\n# Do not edit: change the models and regenerate (a unit test fails on drift).\n")

# Keys copied as they are, in this order (which is also the output order).
_PLAIN_KEYS = (
    "description", "type", "format", "enum", "default",
    "minimum", "maximum", "minLength", "maxLength", "pattern",
    "minItems", "maxItems", "minProperties", "maxProperties",
)
_NESTED_KEYS = ("properties", "required", "items", "additionalProperties")
_DROPPED_KEYS = {"title", "$defs"}
_ORDER = {key: i for i, key in enumerate(_PLAIN_KEYS + _NESTED_KEYS)}
_RULE_ORDER = ["rule", "message", "fieldPath", "reason"]


class UnsupportedSchema(ValueError):
    """A JSON Schema construct with no faithful structural-schema translation."""


def _merge(inner: dict[str, Any], outer: dict[str, Any]) -> dict[str, Any]:
    """`outer`'s keys (a field's own) win over `inner`'s (its type's); CEL rules add up."""
    merged = {**inner, **outer}
    rules = inner.get("x-kubernetes-validations", []) + outer.get("x-kubernetes-validations", [])
    if rules:
        merged["x-kubernetes-validations"] = rules
    return merged


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline `$ref`, and unwrap `anyOf: [X, null]` / single-element `allOf` into X."""
    node = dict(node)
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v != {"type": "null"}]
        if len(variants) != 1:
            raise UnsupportedSchema(f"anyOf other than `X | None`: {variants}")
        if node.get("default", ...) is None:
            del node["default"]  # "absent" is how Kubernetes spells None
        node = _merge(_resolve(variants[0], defs), node)
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise UnsupportedSchema(f"allOf with {len(parts)} parts")
        node = _merge(_resolve(parts[0], defs), node)
    if "$ref" in node:
        name = node.pop("$ref").removeprefix("#/$defs/")
        node = _merge(_resolve(defs[name], defs), node)
    return node


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Translate one JSON Schema node (and its children) into a structural schema node."""
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or key.startswith("x-kubernetes-"):
            continue
        if key in _PLAIN_KEYS or key == "required":
            out[key] = value
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = structural(value, defs)
            # `false` is pydantic's extra="forbid": the server prunes unknown
            # fields and `kubectl apply` refuses them, so it has no schema form.
        elif key == "uniqueItems":
            # Forbidden in CRDs; a list type must say it (cel.KubeList).
            if node.get("x-kubernetes-list-type") not in ("set", "map"):
                raise UnsupportedSchema("uniqueItems without a set/map list type")
        else:
            raise UnsupportedSchema(f"no structural translation for {key!r} in {node}")
    if "type" not in out:
        raise UnsupportedSchema(f"untyped schema node: {node}")
    ordered = dict(sorted(out.items(), key=lambda item: _ORDER[item[0]]))
    for key in sorted(k for k in node if k.startswith("x-kubernetes-")):
        ordered[key] = node[key]
    if "x-kubernetes-validations" in ordered:  # read as: rule, then what the user sees
        ordered["x-kubernetes-validations"] = [
            dict(sorted(rule.items(), key=lambda kv: _RULE_ORDER.index(kv[0])))
            for rule in ordered["x-kubernetes-validations"]]
    return ordered


def openapi_schema(model: type[Resource]) -> dict[str, Any]:
    """The `openAPIV3Schema` of one resource kind."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    # The API server owns these three; a schema of ours could only disagree with it.
    own = {"apiVersion": {"description": "APIVersion of this object.", "type": "string"},
           "kind": {"description": "Kind of this object.", "type": "string"},
           "metadata": {"type": "object"}}
    raw["properties"] = {name: sub for name, sub in raw["properties"].items() if name not in own}
    root = structural(raw, raw.get("$defs", {}))
    root["properties"] = {**own, **root["properties"]}
    root["required"] = [name for name in root.get("required", [])
                        if name not in ("apiVersion", "kind", "metadata")]
    if not root["required"]:
        del root["required"]
    return root


def crd(model: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one resource kind."""
    info, kind = model.crd, model.kind_name()
    assert model.model_fields["api_version"].default == API_GROUP_VERSION
    names: dict[str, Any] = {
        "kind": kind, "listKind": f"{kind}List", "plural": info.plural,
        "singular": info.singular, "shortNames": list(info.short_names),
        "categories": list(info.categories),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{API_GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "traceprobe"}},
        "spec": {
            "group": API_GROUP,
            "names": names,
            "scope": info.scope,
            "versions": [{
                "name": API_VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [c.as_dict() for c in info.printer_columns],
                "schema": {"openAPIV3Schema": openapi_schema(model)},
            }],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Spells shared sub-schemas out in full: YAML anchors would confuse a human reader."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def file_name(model: type[Resource]) -> str:
    return f"{API_GROUP}_{model.crd.plural}.yaml"


def render(model: type[Resource]) -> str:
    """The CRD as committed in crds/: a header comment, then stable, readable YAML."""
    return HEADER + yaml.dump(crd(model), Dumper=_Dumper, sort_keys=False, width=100)


def rendered_files() -> dict[str, str]:
    return {file_name(model): render(model) for model in RESOURCES}


def drifted(directory: Path) -> list[str]:
    """Names of CRD files in `directory` that are missing or differ from a fresh generation."""
    return [name for name, text in rendered_files().items()
            if not (directory / name).is_file() or (directory / name).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, metavar="DIR", help="write the CRD files into DIR")
    mode.add_argument("--check", type=Path, metavar="DIR", help="exit 1 if DIR's files drift")
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted(args.check)
        for name in stale:
            print(f"{args.check / name}: out of date; run "
                  f"python -m traceprobe_api.crd_schema --write {args.check}", file=sys.stderr)
        return 1 if stale else 0
    args.write.mkdir(parents=True, exist_ok=True)
    for name, text in rendered_files().items():
        (args.write / name).write_text(text)
        print(f"wrote {args.write / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
