"""Which BPF program to build for the requested probes on this kernel (pure).

Requested probe kinds come from the union of the TraceProbes that apply to the
node; each kind whose tracepoints are missing is left out and reported, so the
rest still runs (Degraded, not Failed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from traceprobe_agent.features import KernelFeatures
from traceprobe_api.probe import ALL_KINDS

#: Where the BPF C sources are; images set it, a checkout finds ../../bpf.
BPF_DIR_ENV = "TRACEPROBE_BPF_DIR"
_CHECKOUT_BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
SOURCE = "conn_tracker.c"
#: The connection cores: the kernel's TCP counters through cgroup v2 socket programs
#: (preferred), or tracepoints (where cgroup v2 or those program types are missing).
SOCK_OPS, TRACEPOINT = "sock_ops", "tracepoint"
CORES = (SOCK_OPS, TRACEPOINT)
_CORE_SOURCES = {SOCK_OPS: ("edge_maps.h", "sock_storage.h", "request_maps.h",
                            "dns_requests.h", "udp_datagrams.h", "sock_ops_core.c",
                            "tcp_streams.h", "stream_bytes.h", "http_heads.h",
                            "http_messages.h", "http_segments.h", "pg_fields.h",
                            "pg_messages.h", "redis_messages.h",
                            "dns_streams.h", "h2_hpack.h", "h2_frames.h",
                            "stream_segments.h", "tcp_segments.c"),
                 TRACEPOINT: ("edge_maps.h", SOURCE)}

_FLAGS = {"bytes": "WITH_BYTES", "failures": "WITH_FAILURES",
          "retransmits": "WITH_RETRANS", "rtt": "WITH_RTT", "udp": "WITH_UDP",
          "http": "WITH_HTTP", "postgres": "WITH_POSTGRES", "redis": "WITH_REDIS",
          "grpc": "WITH_HTTP2"}
DNS_SOURCE = "dns_answers.c"  # its own program (cgroup_skb), not a flag of SOURCE
BYTES_KPROBE_SOURCE = "conn_bytes_kprobe.c"  # appended to SOURCE when it stands in
# (kind, kernel function, program): attached by name, not by BCC's prefixes.
BYTES_KPROBES = (("kprobe", "tcp_sendmsg", "bytes_sendmsg_entry"),
                 ("kretprobe", "tcp_sendmsg", "bytes_sendmsg_return"),
                 ("kprobe", "tcp_cleanup_rbuf", "bytes_cleanup_rbuf"))
MIN_MAP_ENTRIES = 1024
# Cgroups whose verdict the kernel holds (containers and the node's own services);
# past it, cgroups stay undecided there and are decided at the drain instead.
MAX_CGROUPS = 16384
# Each edge map is per-CPU: every entry holds one value for each possible CPU, so
# entries are capped to keep one map's values within this budget (a 64-CPU node
# would otherwise give a quarter of maxConnections 64 values each).
EDGE_MAP_BUDGET_BYTES = 64 << 20
EDGE_VALUE_BYTES = 128  # struct edge_val in edge_maps.h
_POSSIBLE_CPUS = Path("/sys/devices/system/cpu/possible")


def possible_cpus() -> int:
    """CPUs the kernel sizes per-CPU maps for ("0-63" -> 64), not merely online ones."""
    try:
        text = _POSSIBLE_CPUS.read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return max(1, count)


def edges_for(connections: int, cpus: int) -> int:
    """Edge entries for `connections` tracked at once on `cpus` possible CPUs."""
    per_cpu_cap = EDGE_MAP_BUDGET_BYTES // (EDGE_VALUE_BYTES * max(1, cpus))
    return max(MIN_MAP_ENTRIES, min(connections // 4, per_cpu_cap))
_FALLBACK_NEEDS = "kprobes ({})"
_NEEDS_CORE = "the sock_ops core"
#: Kinds only the sock_ops core observes: requests are parsed from its segments.
SOCK_OPS_KINDS = frozenset({"http", "grpc", "postgres", "redis"})
#: Each request protocol's tail-called step: (program array, index, program).
_STEPS = {"http": ("stream_progs", 0, "http_step"),  # STEP_* in bpf/tcp_streams.h
          "postgres": ("stream_progs", 1, "pg_step"),
          "redis": ("stream_progs", 2, "redis_step"),
          "dns": ("stream_progs", 3, "dns_step"),  # DNS over TCP
          "grpc": ("stream_progs", 4, "h2_step")}  # HTTP/2, gRPC's and any other
_MORE_STEPS = {"grpc": (("stream_progs", 5, "h2_fields"),)}  # a second program


def core_sources() -> tuple[str, ...]:
    """Every file the connection cores are built from."""
    return tuple(dict.fromkeys(n for names in _CORE_SOURCES.values() for n in names))


def bpf_source(*names: str) -> str:
    """The named files of the BPF directory, concatenated (a header first)."""
    where = Path(os.environ.get(BPF_DIR_ENV) or _CHECKOUT_BPF_DIR)
    return "\n".join((where / n).read_text() for n in names)


@dataclass(frozen=True)
class ProgramPlan:
    kinds: tuple[str, ...]            # what will run
    missing: dict[str, list[str]]     # kind -> absent tracepoints (not run)
    max_connections: int
    max_edges: int
    cflags: tuple[str, ...] = field(default=())
    kprobes: tuple[tuple[str, str, str], ...] = ()  # fallbacks to attach (BYTES_KPROBES)
    core: str = TRACEPOINT

    @property
    def sources(self) -> tuple[str, ...]:
        return _CORE_SOURCES[self.core] + ((BYTES_KPROBE_SOURCE,) if self.kprobes else ())

    @property
    def links(self) -> tuple[str, ...]:
        """The sock_ops core's programs to link (bcc_runtime.SOCK_OPS_PROGRAMS)."""
        if self.core != SOCK_OPS:
            return ()
        return ("on_sock_create", "on_sock_ops") + (
            ("on_egress", "on_ingress") if ({"bytes", "udp", "dns"} | SOCK_OPS_KINDS)
            & set(self.kinds)
            else ()) + (
            ("on_udp4_sendmsg", "on_udp6_sendmsg") if "udp" in self.kinds else ())

    @property
    def tail_calls(self) -> tuple[tuple[str, int, str], ...]:
        """(program array, index, program) the sock_ops core's links call."""
        if self.core != SOCK_OPS:
            return ()
        return tuple(step for k in self.kinds if k in _STEPS
                     for step in (_STEPS[k], *_MORE_STEPS.get(k, ())))

    @property
    def counts_requests(self) -> bool:
        """The program has request_maps.h's maps (a request protocol, or DNS lookups)."""
        return bool({"-DWITH_DNS_REQUESTS", *(f"-D{_FLAGS[k]}" for k in SOCK_OPS_KINDS)}
                    & set(self.cflags))

    @property
    def runnable(self) -> bool:
        return "connections" in self.kinds

    def problem(self) -> str | None:
        """A one-line reason when not everything requested runs."""
        if not self.missing:
            return None
        core_only = sorted(k for k, needs in self.missing.items() if needs == [_NEEDS_CORE])
        parts = [f"{kind} needs {', '.join(tps)}" for kind, tps in sorted(self.missing.items())
                 if kind not in core_only]
        text = ["tracepoints missing: " + "; ".join(parts)] if parts else []
        if core_only:
            text.append(f"{', '.join(core_only)} needs {_NEEDS_CORE}, which is not loaded")
        return "; ".join(text)


def plan_program(requested: set[str], features: KernelFeatures, max_connections: int,
                 max_edges: int | None = None, cpus: int | None = None,
                 core: str = TRACEPOINT) -> ProgramPlan:
    unknown = requested - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"unknown probe kinds {sorted(unknown)}; known: {list(ALL_KINDS)}")
    if core not in CORES:
        raise ValueError(f"unknown connection core {core!r}; known: {list(CORES)}")
    if core == SOCK_OPS:
        return _plan_sock_ops(requested, max_connections, max_edges, cpus)
    wanted = set(requested) | {"connections"}  # lifecycle is the base of everything
    if "udp" in wanted:
        wanted.add("bytes")  # UDP is seen only through the send/recv tracepoints
    missing: dict[str, list[str]] = {}
    kinds: list[str] = []
    kprobes: tuple[tuple[str, str, str], ...] = ()
    for kind in ALL_KINDS:
        if kind not in wanted:
            continue
        if kind in SOCK_OPS_KINDS:
            missing[kind] = [_NEEDS_CORE]
            continue
        absent = features.missing_for("bytes" if kind == "udp" else kind)
        if absent and kind == "bytes" and features.kprobes:
            kprobes = BYTES_KPROBES  # TCP bytes through kprobes instead
            kinds.append(kind)
        elif absent:
            missing[kind] = absent + ([_FALLBACK_NEEDS.format("for the fallback")]
                                      if kind == "bytes" else [])
        else:
            kinds.append(kind)
    if "connections" not in kinds:
        kinds = []
    conns, edges, cflags = _sizes(max_connections, max_edges, cpus)
    cflags += [f"-D{_FLAGS[k]}" for k in kinds if k in _FLAGS
               and not (k == "bytes" and kprobes)]
    if kprobes:
        cflags.append("-DWITH_BYTES_KPROBE")
    if kinds and not features.missing_for("lifetime"):
        cflags.append("-DHAVE_DESTROY")
    if kinds and features.raw_tracepoints and "udp" not in kinds:
        cflags.append("-DRAW_HOOKS")
    return ProgramPlan(tuple(kinds), missing, conns, edges, tuple(cflags), kprobes)


def _sizes(max_connections: int, max_edges: int | None,
           cpus: int | None) -> tuple[int, int, list[str]]:
    conns = max(MIN_MAP_ENTRIES, max_connections)
    edges = max(MIN_MAP_ENTRIES, max_edges) if max_edges else edges_for(
        conns, cpus or possible_cpus())
    return conns, edges, [f"-DMAX_CONNS={conns}", f"-DMAX_EDGES={edges}",
                          f"-DMAX_CGROUPS={MAX_CGROUPS}"]


def _plan_sock_ops(requested: set[str], max_connections: int, max_edges: int | None,
                   cpus: int | None) -> ProgramPlan:
    """Every kind, from socket programs: no tracepoint is needed."""
    wanted = set(requested) | {"connections"}
    kinds = tuple(k for k in ALL_KINDS if k in wanted)
    conns, edges, cflags = _sizes(max_connections, max_edges, cpus)
    cflags += [f"-D{_FLAGS[k]}" for k in kinds if k in _FLAGS]
    if "dns" in kinds:
        cflags.append("-DWITH_DNS_REQUESTS")  # lookups to resolvers, over TCP (and UDP)
    return ProgramPlan(kinds, {}, conns, edges, tuple(cflags), core=SOCK_OPS)


def without_fallback(plan: ProgramPlan, features: KernelFeatures, reason: str) -> ProgramPlan:
    """`plan` once its kprobe fallback failed to attach: bytes are missing, and why."""
    return replace(plan, kinds=tuple(k for k in plan.kinds if k != "bytes"),
                   missing={**plan.missing, "bytes": [*features.missing_for("bytes"),
                                                      _FALLBACK_NEEDS.format(reason)]})


def choose_core(preference: str, cgroup2: bool,
                refused: str | None = None) -> tuple[str, str | None]:
    """(core to load, why not the sock_ops core). `preference` is auto or a core;
    `refused`: why the sock_ops core failed to load or link here before (the load is
    the feature probe: program types and attach points are not listed anywhere)."""
    if preference not in ("auto", *CORES):
        raise ValueError(f"unknown connection core {preference!r}; "
                         f"known: auto, {', '.join(CORES)}")
    if preference == TRACEPOINT:
        return TRACEPOINT, "the tracepoint core was asked for"
    if preference == SOCK_OPS:
        return SOCK_OPS, None
    why = (None if cgroup2 else "no cgroup v2 hierarchy is mounted") or refused
    return (TRACEPOINT, why) if why else (SOCK_OPS, None)
