"""The real-node tier: one real node (tests/harness/node.py) per test run, shared by
its modules; each module cleans up what it created in its own namespaces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.node import RealNode
from harness.node_matrix import Matrix, running_matrix
from harness.node_session import NodeBusy, exclusive_node
from harness.prereq import missing, require_root
from harness.tools import ToolMissing


@pytest.fixture(scope="session")
def real_node(world_dir: Path, _reaped: None) -> Iterator[RealNode]:
    require_root("a real kubelet and container runtime")
    try:
        with exclusive_node(world_dir) as node:
            print(f"\nreal node up: {json.dumps(node.timings)}")
            yield node
    except (NodeBusy, ToolMissing) as exc:
        missing(str(exc))


@pytest.fixture(scope="session")
def matrix(real_node: RealNode, world_dir: Path) -> Iterator[Matrix]:
    """The traffic matrix, run once for both of its test modules."""
    with running_matrix(real_node, world_dir) as m:
        yield m
