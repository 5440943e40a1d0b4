"""Fixtures of the cluster tier's chart tests."""

from __future__ import annotations

from typing import Any

import pytest

from harness.chart_cluster import install_chart_objects


@pytest.fixture(scope="module")
def installed(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(control plane, the chart's objects, a scratch directory), the objects applied."""
    tmp = tmp_path_factory.mktemp("chart")
    return control_plane, install_chart_objects(control_plane, tmp), tmp
