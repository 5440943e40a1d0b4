"""The agent in a cluster: follow the probes whose nodeSelector matches this node,
run their union without restarting, and write this node's NodeReport every
interval so the operator can summarise readiness (API calls are in kube.py)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pydantic import ValidationError

from traceprobe_agent.agent import Agent, Sink, print_records
from traceprobe_agent.features import KernelFeatures
from traceprobe_agent.health import STALL_SECONDS, Health
from traceprobe_agent.host_addresses import NodeAddresses
from traceprobe_agent.kernel_headers import find_kernel_headers
from traceprobe_agent.kube import API_ERRORS, NodeApi
from traceprobe_agent.listeners import open_listeners
from traceprobe_agent.nat_events import NatTable, NatWatcher
from traceprobe_agent.node_config import (
    ProbeView,
    applies,
    connections_ceiling,
    probe_view,
    union_config,
)
from traceprobe_agent.pod_index import AwaitPods, PodIndex, pod_info
from traceprobe_agent.probe_reports import DropWatch, node_status, probe_entry
from traceprobe_agent.report_sender import ReportSender
from traceprobe_agent.scope import Scope, Selection
from traceprobe_agent.settings import AgentSettings, UsageError
from traceprobe_api.backoff import Backoff
from traceprobe_api.node_report import NodeReportStatus
from traceprobe_api.records import ConnectionRecord
from traceprobe_api.resources import PROBE_PLURALS

log = logging.getLogger("traceprobe.agent")
# An API server away at start is retried at 1, 2, 4 ... then every 30 seconds: soon
# after a blip, without hammering one that is down for long.
API_RETRY_FIRST_SECONDS, API_RETRY_MAX_SECONDS = 1.0, 30.0
ProbeKey = tuple[str, str | None, str]


class NodeProbes:
    """The probes the watches have seen, and what this node last made of them.

    Watch threads feed it; the main loop reads it. Every change sets `changed`
    so the loop reconciles and reports at once rather than at the next tick."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.probes: dict[ProbeKey, ProbeView] = {}
        self.namespaces: dict[str, dict[str, str]] = {}  # labels by name
        self.changed = threading.Event()
        self.load_error: str | None = None
        self.header_source = ""  # looked up when programs load, not per report
        self.drop_watch = DropWatch()
        self._lock = threading.Lock()

    def signalled(self, fn: Callable[..., None]) -> Callable[..., None]:
        """`fn` run under the lock, then `changed` set (for the watch callbacks)."""
        def run(*args: Any) -> None:
            with self._lock:
                fn(*args)
            self.changed.set()
        return run

    def relist(self, kind: str, items: list[dict[str, Any]]) -> None:
        for key in [k for k in self.probes if k[0] == kind]:
            del self.probes[key]
        self.probes.update((v.ref, v) for v in (probe_view({**o, "kind": kind}) for o in items))

    def apply_event(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        view = probe_view({**obj, "kind": kind})
        if event == "DELETED":
            self.probes.pop(view.ref, None)
        else:
            self.probes[view.ref] = view

    def relist_namespaces(self, items: list[dict[str, Any]]) -> None:
        self.namespaces = {}
        for obj in items:
            self.namespace_event("ADDED", obj)

    def namespace_event(self, event: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if event == "DELETED":
            self.namespaces.pop(meta.get("name", ""), None)
        else:
            self.namespaces[str(meta.get("name", ""))] = dict(meta.get("labels") or {})

    def scope(self, probes: list[ProbeView]) -> Scope:
        with self._lock:
            return Scope(tuple(p for p in probes if not p.deleting), dict(self.namespaces))

    def mine(self, labels: dict[str, str]) -> list[ProbeView]:
        with self._lock:
            return [p for p in self.probes.values() if applies(p, labels)]

    def reconcile(self, labels: dict[str, str]) -> list[ProbeView]:
        """Run the union of this node's probes; a load failure is reported, never a crash."""
        probes = self.mine(labels)
        wanted = union_config(probes)
        headers = find_kernel_headers()
        self.header_source = str(headers.path) if headers else ""
        try:
            if wanted is None:
                self.agent.close()
            else:
                self.agent.apply(wanted)
            self.load_error = None
        except Exception as exc:  # BpfUnavailable or a compile error
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("could not load programs: %s", self.load_error)
        return probes

    def status(self, probes: list[ProbeView], features: KernelFeatures) -> NodeReportStatus:
        counters = self.agent.stats.kernel_counters
        usage = self.agent.sample_map_usage()
        programs = self.agent.program_ids()
        full = self.drop_watch.update(counters, time.monotonic())
        ceiling = connections_ceiling(probes)
        entries = [probe_entry(p, self.agent.plan, programs, usage, counters, self.load_error,
                               full, ceiling) for p in sorted(probes, key=lambda p: p.ref)]
        return node_status(entries, features, self.header_source, datetime.now(UTC),
                           self.agent.stats.core, self.agent.stats.core_reason)


def _relist_pods(index: PodIndex, items: list[dict[str, Any]]) -> None:
    index.replace_all([pod_info(p) for p in items])


def _pod_event(index: PodIndex, event: str, obj: dict[str, Any]) -> None:
    info = pod_info(obj)
    if event == "DELETED":
        index.delete(info.uid)
    else:
        index.upsert(info)
    index.expire()


def _start(name: str, target: Callable[..., None], *args: Any) -> None:
    threading.Thread(target=target, args=args, daemon=True, name=name).start()


def _start_watches(kube: NodeApi, state: NodeProbes, pods: PodIndex,
                   stop: threading.Event) -> None:
    """One thread per probe kind and one for this node's pods."""
    for kind in PROBE_PLURALS:
        _start(f"watch-{kind}", kube.watch_probes, kind,
               state.signalled(partial(state.relist, kind)),
               state.signalled(partial(state.apply_event, kind)), stop)
    _start("watch-pods", kube.watch_pods, state.signalled(partial(_relist_pods, pods)),
           state.signalled(partial(_pod_event, pods)), stop)
    _start("watch-namespaces", kube.watch_namespaces, state.signalled(state.relist_namespaces),
           state.signalled(state.namespace_event), stop)


def _fan_out(sinks: list[Sink]) -> Sink:
    def sink(records: list[ConnectionRecord]) -> None:
        for each in sinks:
            each(records)
    return sink


def _await_api_server(kube: NodeApi, health: Health, stop: threading.Event) -> bool:
    """Nothing can run before the probes are read: at start, wait for the API server,
    backing off, one clear line per try, staying live for the kubelet meanwhile.
    False when stopped first."""
    backoff, waited = Backoff(API_RETRY_FIRST_SECONDS, API_RETRY_MAX_SECONDS), False
    while not stop.is_set() and (problem := kube.unreachable()):
        delay = backoff.failed()
        log.warning("API server %s unreachable (%s); retrying in %.0fs", kube.server, problem,
                    delay)
        waited = True
        health.beat()
        stop.wait(delay)
    if waited and not stop.is_set():
        log.info("API server %s answers; watching probes", kube.server)
    return not stop.is_set()


def run_in_cluster(settings: AgentSettings, features: KernelFeatures, kube: NodeApi) -> int:
    """Run until SIGTERM; `kube`'s credentials are loaded already, so bad ones stopped
    the agent before anything started. A listener that cannot bind is a UsageError."""
    node, interval = settings.node_name, settings.interval_seconds
    pods = PodIndex()
    sinks: list[Sink] = []
    sender = None
    if settings.map_endpoint:
        sender = ReportSender(settings.map_endpoint, node, ca_file=settings.map_ca_file,
                              token_file=settings.map_token_file)
        sinks.append(sender)
    if settings.print_records or not settings.map_endpoint:
        sinks.append(print_records)
    selection = Selection(pods, settings.cgroup_root)
    nat = NatTable(skips_client=selection.skips_client)
    agent = Agent(node, _fan_out(sinks), features, settings.cgroup_root, enrich=pods.enrich,
                  nat=nat, node_addresses=NodeAddresses(), await_pods=AwaitPods(pods),
                  selection=selection, core=settings.core)
    agent.stats.report = sender.stats if sender else None
    state = NodeProbes(agent)
    # The loop below goes round at least every second, but a compile holds it.
    health = Health(agent, stall_seconds=STALL_SECONDS, load_error=lambda: state.load_error)
    try:
        open_listeners(settings, agent, health, kube)
    except UsageError:
        if sender is not None:
            sender.close()
        raise
    nat_watcher = NatWatcher(nat)  # after the listeners: conntrack is a child to end
    if nat_watcher.problem:
        log.warning("%s", nat_watcher.problem)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    reached = _await_api_server(kube, health, stop)
    if reached:
        _start_watches(kube, state, pods, stop)
    labels: dict[str, str] = {}
    probes: list[ProbeView] = []
    next_tick = time.monotonic() + interval

    def report() -> None:
        try:
            kube.write_report(state.status(probes, features))
        except (*API_ERRORS, ValidationError) as exc:  # the server would refuse it too
            log.warning("writing NodeReport failed (%s); will retry", exc)

    while not stop.is_set():
        health.beat()
        if state.changed.wait(timeout=max(0.0, min(1.0, next_tick - time.monotonic()))):
            state.changed.clear()
            try:
                labels = kube.node_labels()
            except API_ERRORS as exc:
                log.warning("reading node %s failed (%s); keeping its last labels", node, exc)
            # The scope first: a program loaded by reconcile starts with it.
            selection.update(state.scope(state.mine(labels)))
            probes = state.reconcile(labels)
            agent.sync_scope()
            interval = agent.config.interval_seconds if agent.config else interval
            report()  # the operator waits on this: say at once what changed
        if time.monotonic() >= next_tick:
            next_tick = time.monotonic() + interval
            agent.tick()
            report()  # doubles as the heartbeat
    agent.close()
    nat_watcher.close()
    if sender is not None:
        sender.close()
    # Leave a last word: every probe detached here (unless no server ever answered).
    with contextlib.suppress(*API_ERRORS, ValidationError):
        if reached:
            kube.write_report(state.status([replace(p, deleting=True) for p in probes],
                                           features))
    return 0
