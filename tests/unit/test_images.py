"""The Dockerfiles (images/) agree with the package. No container runtime exists here,
so the images are not built; these tests check what a build would rely on: the
Python version, the sources copied, the entry points and the flags they are given,
the paths between stages, and the agent's BCC and kernel-headers fallback."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from harness.chart import CHART, container, render
from harness.tools import REPO
from traceprobe_operator.agent_workload import ActiveProbe, render_daemonset
from traceprobe_operator.settings import OperatorSettings

IMAGES = REPO / "images"
BOOKWORM_PYTHON = "3.11"  # Debian 12's python3, which python3-bpfcc is built for
VENV = "/opt/traceprobe/venv"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SOURCE_DIRS = PROJECT["tool"]["setuptools"]["packages"]["find"]["where"]


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.steps if i == instruction]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction == "FROM":
            base, _, name = rest.partition(" AS ")
            for key, value in args.items():
                base = base.replace("${" + key + "}", value)
            stages.append(Stage(base, name or None))
        elif instruction == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].steps.append((instruction, " ".join(rest.split())))
    return args, stages


def _module_has_main(module: str) -> bool:
    return any((REPO / where / module / "__main__.py").is_file() for where in SOURCE_DIRS)


def _help(module: str) -> str:
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


@pytest.fixture(scope="module")
def images() -> dict[str, list[Stage]]:
    return {name: parse(IMAGES / f"{name}.Dockerfile")[1] for name in ("traceprobe", "agent")}


def test_bookworm_python_satisfies_the_package() -> None:
    assert SpecifierSet(PROJECT["project"]["requires-python"]).contains(BOOKWORM_PYTHON)
    assert PROJECT["tool"]["mypy"]["python_version"] == BOOKWORM_PYTHON
    assert PROJECT["tool"]["ruff"]["target-version"] == "py" + BOOKWORM_PYTHON.replace(".", "")


@pytest.mark.parametrize("name", ["traceprobe", "agent"])
def test_python_stages_are_debian_bookworm(images: dict[str, list[Stage]], name: str) -> None:
    args, stages = parse(IMAGES / f"{name}.Dockerfile")
    assert args["DEBIAN_IMAGE"] == "debian:bookworm-slim"
    runtime = stages[-1]
    assert runtime.base == "debian:bookworm-slim" and runtime.name is None
    for stage in stages:
        assert "bookworm" in stage.base, f"{name}: stage {stage.name} is not Debian 12"
        if any("python3" in run for run in stage.args("RUN")):
            assert stage.base == "debian:bookworm-slim", f"{stage.name}: Debian's python3"


@pytest.mark.parametrize("name", ["traceprobe", "agent"])
def test_build_copies_every_source_folder_and_installs_the_package(
        images: dict[str, list[Stage]], name: str) -> None:
    build = next(s for s in images[name] if s.name == "build")
    copies = [c for c in build.args("COPY") if not c.startswith("--from")]
    copied = {src.rstrip("/") for c in copies for src in c.split()[:-1]}
    needed = {"pyproject.toml", PROJECT["project"]["readme"], *SOURCE_DIRS}
    assert needed <= copied, f"{name}: build stage misses {needed - copied}"
    runs = " ".join(build.args("RUN"))
    assert "python3 -m venv" in runs and VENV in runs
    assert f"{VENV}/bin/pip install --no-cache-dir ." in runs
    assert "compileall" in runs  # read-only root filesystem: no bytecode written at run time
    ignore = (IMAGES / f"{name}.Dockerfile.dockerignore").read_text().splitlines()
    for src in needed:
        assert any(line.rstrip("/") == f"!{src}" for line in ignore), f"{src} not in context"


@pytest.mark.parametrize("name", ["traceprobe", "agent"])
def test_runtime_runs_the_venv_python(images: dict[str, list[Stage]], name: str) -> None:
    runtime = images[name][-1]
    assert f"--from=build {VENV} {VENV}" in runtime.args("COPY")
    env = " ".join(runtime.args("ENV"))
    assert f"PATH={VENV}/bin:" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    assert "python3" in " ".join(runtime.args("RUN"))  # the venv links to /usr/bin/python3


def test_traceprobe_image_entry_points_and_user(images: dict[str, list[Stage]]) -> None:
    runtime = images["traceprobe"][-1]
    assert runtime.args("ENTRYPOINT") == ['["python", "-m", "traceprobe_operator"]']
    docs = render()
    for deployment in ("traceprobe-operator", "traceprobe-service-map"):
        spec = container(docs, deployment)
        python, dash_m, module = spec["command"]
        assert (python, dash_m) == ("python", "-m") and _module_has_main(module), module
        uid = spec["securityContext"]["runAsUser"]
        gid = spec["securityContext"]["runAsGroup"]
        assert runtime.args("USER") == [f"{uid}:{gid}"]
        # A uid without a passwd entry breaks getpass.getuser(), which kopf's peering uses.
        runs = " ".join(runtime.args("RUN"))
        assert f"useradd --uid {uid} --gid {gid}" in runs and f"groupadd --gid {gid}" in runs


def test_chart_flags_are_ones_the_entry_points_accept() -> None:
    docs = render(sets=["operator.verbose=true", "serviceMap.export.endpoint=https://o:4317",
                        "serviceMap.export.serviceGraph=true"])
    for deployment, module in (("traceprobe-operator", "traceprobe_operator"),
                               ("traceprobe-service-map", "traceprobe_map")):
        text = _help(module)
        for flag in _flags(container(docs, deployment).get("args", [])):
            assert re.search(rf"{flag}\b", text), f"{module} has no {flag}"


def test_agent_image_entry_point_and_the_flags_the_operator_gives_it(
        images: dict[str, list[Stage]]) -> None:
    runtime = images["agent"][-1]
    [entrypoint] = runtime.args("ENTRYPOINT")
    script_in_image = yaml.safe_load(entrypoint)[0]
    source = next(c.split()[0] for c in runtime.args("COPY") if c.endswith(script_in_image))
    script = REPO / source
    assert script.stat().st_mode & 0o111, f"{source} must be executable"
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert 'exec python -m traceprobe_agent "$@"' in script.read_text()
    assert _module_has_main("traceprobe_agent")
    assert runtime.args("USER") == ["0:0"]  # capabilities added to a container need root
    ds = render_daemonset(OperatorSettings(), [ActiveProbe("TraceProbe", "shop", "web")])
    [agent] = ds["spec"]["template"]["spec"]["containers"]
    assert "command" not in agent, "the operator must leave the image's entry point alone"
    text = _help("traceprobe_agent")
    for flag in _flags(agent["args"]):
        assert re.search(rf"{flag}\b", text), f"traceprobe_agent has no {flag}"


def test_agent_image_has_bcc_conntrack_and_a_kernel_headers_fallback(
        images: dict[str, list[Stage]]) -> None:
    stages = {s.name: s for s in images["agent"]}
    build, headers, runtime = stages["build"], stages["kernel-headers"], stages[None]
    # BCC's Python module is Debian's: the venv must see dist-packages.
    assert f"python3 -m venv --system-site-packages {VENV}" in " ".join(build.args("RUN"))
    packages = " ".join(runtime.args("RUN"))
    assert "python3-bpfcc" in packages and "conntrack" in packages
    assert "openssl" in packages.split()  # the /metrics certificate, beyond loopback
    assert "linux-headers-$(dpkg --print-architecture)" in " ".join(headers.args("RUN"))
    tree = "/opt/traceprobe/kernel-headers"
    assert f"--from=kernel-headers {tree} {tree}" in runtime.args("COPY")
    for part in ("include/linux", "include/generated"):  # what BCC and the agent look for
        assert f"test -d {tree}/{part}" in " ".join(headers.args("RUN"))
    script = (IMAGES / "agent-entrypoint.sh").read_text()
    assert f"BCC_KERNEL_SOURCE={tree}" in script
    assert "/lib/modules/$release/build" in script and "/lib/modules/$release/source" in script


def test_agent_image_carries_the_bpf_sources_where_the_agent_looks(
        images: dict[str, list[Stage]]) -> None:
    """The agent compiles bpf/*.c on the node: an image without them loads nothing."""
    from traceprobe_agent.program import BPF_DIR_ENV

    runtime = next(s for s in images["agent"] if s.name is None)
    assert "bpf/ /opt/traceprobe/bpf/" in runtime.args("COPY")
    env = " ".join(runtime.args("ENV"))
    assert f"{BPF_DIR_ENV}=/opt/traceprobe/bpf" in env
    ignore = (IMAGES / "agent.Dockerfile.dockerignore").read_text().splitlines()
    assert "!bpf/" in ignore
    sources = {p.name for p in (REPO / "bpf").glob("*.c")}
    assert {"conn_tracker.c", "dns_answers.c"} <= sources


def test_web_assets_stage_feeds_the_packaged_map_view(images: dict[str, list[Stage]]) -> None:
    stages = {s.name: s for s in images["traceprobe"]}
    fetch = REPO / "scripts" / "fetch-web-assets.sh"
    assert fetch.is_file(), "the web-assets stage runs scripts/fetch-web-assets.sh"
    vendor_dir = re.search(r'VENDOR="\$REPO/([^"]+)"', fetch.read_text())
    assert vendor_dir, "fetch-web-assets.sh no longer names its VENDOR folder"
    vendor = vendor_dir.group(1).rstrip("/")
    web = stages["web-assets"]
    assert "scripts/fetch-web-assets.sh" in " ".join(web.args("RUN"))
    assert f"--from=web-assets /src/{vendor}/ {vendor}/" in stages["build"].args("COPY")
    package_data: dict[str, Any] = PROJECT["tool"]["setuptools"].get("package-data", {})
    _, package, inside = vendor.split("/", 2)  # <source folder>/<package>/<path>
    assert any(p.startswith(f"{inside}/") for p in package_data.get(package, [])), (
        f"pyproject package-data does not ship {vendor}")


def test_chart_default_images_are_the_ones_these_files_build() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for name, repository in (("traceprobe", values["image"]["repository"]),
                             ("agent", values["agent"]["image"]["repository"])):
        header = (IMAGES / f"{name}.Dockerfile").read_text()
        assert f"-t {repository}:{chart['appVersion']} ." in header, (
            f"{name}.Dockerfile's build line should tag {repository}")
