from __future__ import annotations

from pathlib import Path

from traceprobe_agent.kernel_headers import find_kernel_headers


def _tree(path: Path) -> Path:
    (path / "include" / "linux").mkdir(parents=True)
    return path


def test_env_wins_over_modules(tmp_path: Path) -> None:
    env_tree = _tree(tmp_path / "env")
    _tree(tmp_path / "modules" / "6.18" / "build")
    found = find_kernel_headers("6.18", {"BCC_KERNEL_SOURCE": str(env_tree)},
                                tmp_path / "modules", tmp_path / "none.tar.xz")
    assert found is not None and found.origin == "env" and found.path == env_tree


def test_build_then_source_then_kheaders(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    kheaders = tmp_path / "kheaders.tar.xz"
    kheaders.write_bytes(b"")
    assert find_kernel_headers("6.18", {}, modules, kheaders).origin == "kheaders"  # type: ignore[union-attr]
    _tree(modules / "6.18" / "source")
    assert find_kernel_headers("6.18", {}, modules, kheaders).origin == "modules-source"  # type: ignore[union-attr]
    _tree(modules / "6.18" / "build")
    assert find_kernel_headers("6.18", {}, modules, kheaders).origin == "modules-build"  # type: ignore[union-attr]


def test_nothing_found_is_none_not_an_error(tmp_path: Path) -> None:
    empty_env_tree = tmp_path / "empty"
    empty_env_tree.mkdir()
    assert find_kernel_headers("6.18", {"BCC_KERNEL_SOURCE": str(empty_env_tree)},
                               tmp_path / "modules", tmp_path / "none") is None
