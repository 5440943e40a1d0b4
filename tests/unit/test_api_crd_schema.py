"""The CRDs in crds/ are generated from the models, structural, and complete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from harness.tools import REPO
from traceprobe_api import crd_schema
from traceprobe_api.crd_schema import UnsupportedSchema, crd, drifted, openapi_schema
from traceprobe_api.node_report import NodeReport
from traceprobe_api.probe import ClusterTraceProbe, TraceProbe
from traceprobe_api.resources import RESOURCES

CRDS = REPO / "crds"
FORBIDDEN = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "const",
             "uniqueItems", "nullable", "exclusiveMinimum", "exclusiveMaximum"}


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crds_match_the_models() -> None:
    stale = drifted(CRDS)
    assert not stale, (f"{stale} differ from the models; regenerate with "
                       "`python -m traceprobe_api.crd_schema --write crds/`")


def test_no_stray_crd_files() -> None:
    expected = {crd_schema.file_name(model) for model in RESOURCES}
    assert {p.name for p in CRDS.glob("*.yaml")} == expected


def test_cli_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crd_schema.main(["--check", str(CRDS)]) == 0
    assert crd_schema.main(["--check", str(tmp_path)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert crd_schema.main(["--write", str(tmp_path)]) == 0
    assert crd_schema.main(["--check", str(tmp_path)]) == 0


@pytest.mark.parametrize("model", RESOURCES, ids=lambda m: m.__name__)
def test_schema_is_structural(model: type[Any]) -> None:
    for path, node in walk(openapi_schema(model)):
        assert "type" in node, f"{path}: every node needs a type"
        assert not FORBIDDEN & node.keys(), f"{path}: {FORBIDDEN & node.keys()}"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties") is not False, path
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) <= {"rule", "message", "fieldPath"} and rule["message"], path
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), path


def test_every_spec_leaf_is_described() -> None:
    for model in RESOURCES:
        for path, node in walk(openapi_schema(model)):
            if path.count(".") >= 2 and not path.endswith(("[]", "{}")):
                assert node.get("description"), f"{model.__name__}{path} lacks a description"


def test_defaults_live_in_the_schema() -> None:
    spec = openapi_schema(TraceProbe)["properties"]["spec"]
    props = spec["properties"]
    assert spec["default"] == {} and props["podSelector"]["default"] == {}
    assert props["probes"]["default"] == ["connections", "failures", "bytes", "retransmits",
                                          "rtt", "dns"]
    assert props["interval"]["default"] == "10s" and props["limits"]["default"] == {}
    limits = props["limits"]["properties"]
    # No per-event output exists to cap: an events-per-second limit would be ignored.
    assert set(limits) == {"maxConnections"} and limits["maxConnections"]["default"] == 65536
    # Export is cluster-wide (the service map's): a probe has no export of its own.
    assert "export" not in props


def test_cluster_kind_adds_namespace_selector_and_host_processes_only() -> None:
    namespaced = openapi_schema(TraceProbe)["properties"]["spec"]["properties"]
    cluster = openapi_schema(ClusterTraceProbe)["properties"]["spec"]["properties"]
    assert set(cluster) - set(namespaced) == {"namespaceSelector", "hostProcesses"}
    assert set(namespaced) <= set(cluster)


def test_names_scope_columns_and_subresources() -> None:
    docs = {model.kind_name(): crd(model) for model in RESOURCES}
    expect = {"TraceProbe": ("Namespaced", ["tp"]), "ClusterTraceProbe": ("Cluster", ["ctp"]),
              "NodeReport": ("Cluster", ["tpnr"])}
    for kind, (scope, short) in expect.items():
        spec = docs[kind]["spec"]
        assert (spec["scope"], spec["names"]["shortNames"]) == (scope, short)
        assert spec["names"]["categories"] == ["traceprobe-all"]
        (version,) = spec["versions"]
        assert version["subresources"] == {"status": {}}
    for kind in ("TraceProbe", "ClusterTraceProbe"):
        columns = docs[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
        assert [c["name"] for c in columns if not c.get("priority")] == ["Ready", "Nodes", "Age"]
    node_columns = docs["NodeReport"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert {"Node", "Probes", "Heartbeat"} <= {c["name"] for c in node_columns}


def test_node_report_root_rule() -> None:
    rules = openapi_schema(NodeReport)["x-kubernetes-validations"]
    assert rules[0]["rule"] == "self.metadata.name == self.spec.nodeName"


def test_committed_files_are_plain_yaml_without_anchors() -> None:
    for path in CRDS.glob("*.yaml"):
        text = path.read_text()
        assert "&id" not in text and "*id" not in text, path
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


class _Left(BaseModel):
    a: int


class _Right(BaseModel):
    b: int


class _Union(BaseModel):
    either: _Left | _Right


class _Untyped(BaseModel):
    anything: Any


@pytest.mark.parametrize("model", [_Union, _Untyped])
def test_untranslatable_schemas_fail_loudly(model: type[BaseModel]) -> None:
    raw = model.model_json_schema()
    with pytest.raises(UnsupportedSchema):
        crd_schema.structural(raw, raw.get("$defs", {}))
