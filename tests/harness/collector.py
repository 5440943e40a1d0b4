"""A real OpenTelemetry Collector: OTLP gRPC + HTTP in, a JSON-lines file out.

Tests query what it received by metric name and attributes, polling the file
the collector's file exporter writes (one OTLP/JSON export request per line).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.procs import ManagedProcess, free_port, wait_for_port
from harness.tools import tool_path


@dataclass(frozen=True)
class MetricPoint:
    name: str
    kind: str  # sum, gauge, histogram, ...
    value: float | None  # sums and gauges; histograms use `count`/`sum` in `extra`
    attributes: dict[str, Any]
    resource: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def _any_value(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attrs(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: _any_value(item.get("value", {})) for item in items or []}


def parse_metrics_line(line: str) -> list[MetricPoint]:
    """Flatten one OTLP/JSON ExportMetricsServiceRequest into data points."""
    points: list[MetricPoint] = []
    for rm in json.loads(line).get("resourceMetrics", []):
        resource = _attrs(rm.get("resource", {}).get("attributes"))
        for sm in rm.get("scopeMetrics", []):
            for metric in sm.get("metrics", []):
                for kind in ("sum", "gauge", "histogram", "exponentialHistogram", "summary"):
                    if kind not in metric:
                        continue
                    for dp in metric[kind].get("dataPoints", []):
                        raw = dp.get("asInt", dp.get("asDouble"))
                        extra = {k: dp[k] for k in ("count", "sum", "bucketCounts",
                                                    "explicitBounds") if k in dp}
                        points.append(MetricPoint(
                            metric["name"], kind, None if raw is None else float(raw),
                            _attrs(dp.get("attributes")), resource, extra))
    return points


class Collector:
    """otelcol with an OTLP receiver (gRPC and HTTP) and a file exporter."""

    def __init__(self, workdir: Path, tls: tuple[Path, Path] | None = None,
                 host: str = "127.0.0.1") -> None:
        """`tls` (certificate, key) makes both receivers TLS-only; `host` is the address
        it listens on (a real node's pods reach the host at the node IP)."""
        self.workdir = workdir
        self.tls = tls
        self.host = host
        self._parsed_bytes = 0
        self._restarts = 0  # files set aside at restarts (received.N.jsonl)
        self._points: list[MetricPoint] = []
        self.output = workdir / "received.jsonl"
        self.grpc_port = 0
        self.http_port = 0
        self.process: ManagedProcess | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.http_port}"

    def config(self) -> dict[str, Any]:
        tls = {"tls": {"cert_file": str(self.tls[0]), "key_file": str(self.tls[1])}} \
            if self.tls else {}
        return {
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": f"{self.host}:{self.grpc_port}", **tls},
                "http": {"endpoint": f"{self.host}:{self.http_port}", **tls}}}},
            "exporters": {
                "file": {"path": str(self.output), "flush_interval": "100ms"},
                "debug": {"verbosity": "basic"}},
            "service": {
                # The collector's own metrics server would take a fixed port.
                "telemetry": {"metrics": {"level": "none"}},
                "pipelines": {
                    signal: {"receivers": ["otlp"], "exporters": ["file", "debug"]}
                    for signal in ("metrics", "traces", "logs")}},
        }

    def start(self, timeout: float = 30.0, keep_ports: bool = False) -> None:
        """Start; `keep_ports` restarts on the previous ports (an outage, then recovery)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not (keep_ports and self.grpc_port):
            self.grpc_port, self.http_port = free_port(), free_port()
        if self.output.exists():
            # The file exporter truncates its file at start: keep what the last run
            # wrote (parsed, and the file set aside) and read the new file from 0.
            self.metrics()
            self._restarts += 1
            self.output.rename(self.output.with_name(f"{self.output.stem}.{self._restarts}"
                                                     f"{self.output.suffix}"))
            self._parsed_bytes = 0
        config_path = self.workdir / "otelcol.yaml"
        config_path.write_text(yaml.safe_dump(self.config()))
        self.process = ManagedProcess(
            "otelcol", [tool_path("otelcol"), f"--config={config_path}"],
            self.workdir / "otelcol.log")
        wait_for_port(self.grpc_port, timeout, self.process.popen, self.host)
        wait_for_port(self.http_port, timeout, self.process.popen, self.host)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
            self.process = None

    def metrics(self) -> list[MetricPoint]:
        """Every point received so far, over restarts. The file only grows while the
        collector runs (start() sets it aside), so each poll parses just the complete
        lines added since the last one."""
        if not self.output.exists():
            return []
        size = self.output.stat().st_size
        if size < self._parsed_bytes:  # a new file (restarted elsewhere): start over
            self._parsed_bytes, self._points = 0, []
        with self.output.open("rb") as f:
            f.seek(self._parsed_bytes)
            chunk = f.read(size - self._parsed_bytes)
        end = chunk.rfind(b"\n") + 1  # a half-written last line waits for the next poll
        for line in chunk[:end].decode().splitlines():
            if line.strip():
                self._points.extend(parse_metrics_line(line))
        self._parsed_bytes += end
        return list(self._points)

    def find(self, name: str, **attributes: Any) -> list[MetricPoint]:
        """Points named `name` whose data-point or resource attributes include `attributes`."""
        return [p for p in self.metrics() if p.name == name and all(
            p.attributes.get(k, p.resource.get(k)) == v for k, v in attributes.items())]

    def wait_for(self, name: str, timeout: float = 15.0, **attributes: Any) -> list[MetricPoint]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(name, **attributes)
            if found:
                return found
            time.sleep(0.2)
        seen = sorted({p.name for p in self.metrics()})
        raise AssertionError(f"collector received no {name} {attributes} in {timeout}s; "
                             f"metrics seen: {seen}")
