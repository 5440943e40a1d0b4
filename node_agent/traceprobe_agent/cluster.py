"""The agent in a cluster: the one module of the agent that talks to Kubernetes.

Watches TraceProbes and ClusterTraceProbes, applies the ones whose nodeSelector
matches this node (without restarting), and writes this node's NodeReport every
interval so the operator can summarise readiness.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from traceprobe_agent.agent import Agent
from traceprobe_agent.features import KernelFeatures
from traceprobe_agent.kernel_headers import find_kernel_headers
from traceprobe_agent.nat_events import NatTable, NatWatcher
from traceprobe_agent.node_config import (
    DropWatch,
    ProbeView,
    applies,
    probe_entry,
    probe_view,
    union_config,
)
from traceprobe_agent.pod_index import PodIndex, pod_info
from traceprobe_agent.report_sender import ReportSender
from traceprobe_api import API_GROUP, API_VERSION, __version__
from traceprobe_api.records import ConnectionRecord

# What an API server that is away looks like: the agent keeps running on its caches.
API_ERRORS = (ApiException, OSError, HTTPError)

log = logging.getLogger("traceprobe.agent")
PLURALS = {"TraceProbe": "traceprobes", "ClusterTraceProbe": "clustertraceprobes"}


def _load_config() -> Any:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class ClusterAgent:
    def __init__(self, node: str, agent: Agent, api: Any) -> None:
        self.node = node
        self.agent = agent
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.probes: dict[tuple[str, str | None, str], ProbeView] = {}
        self.changed = threading.Event()
        self.load_error: str | None = None
        self.header_source = ""  # looked up when programs load, not per report
        self.drop_watch = DropWatch()
        self._lock = threading.Lock()

    # --- watching ---------------------------------------------------------
    def _list_then_watch(self, what: str, list_fn: Any, args: tuple[Any, ...],
                         kwargs: dict[str, Any], on_list: Any, on_event: Any,
                         stop: threading.Event) -> None:
        """List, then watch from that version; on any failure keep the last view
        (the API server may be away: the agent runs on) and start over."""
        plain = self.core.api_client.sanitize_for_serialization
        while not stop.is_set():
            try:
                listing = plain(list_fn(*args, **kwargs))
                with self._lock:
                    on_list(listing.get("items") or [])
                self.changed.set()
                stream = watch.Watch().stream(
                    list_fn, *args, resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=60, **kwargs)
                for event in stream:
                    with self._lock:
                        on_event(event["type"], event["raw_object"])
                    self.changed.set()
                    if stop.is_set():
                        return
            except (*API_ERRORS, ValueError, KeyError) as exc:
                log.warning("watching %s failed (%s); retrying in 5s", what, exc)
                stop.wait(5)

    def watch_forever(self, kind: str, stop: threading.Event) -> None:
        def view(obj: dict[str, Any]) -> ProbeView:
            return probe_view({**obj, "kind": kind})

        def relist(items: list[dict[str, Any]]) -> None:
            for key in [k for k in self.probes if k[0] == kind]:
                del self.probes[key]
            self.probes.update((v.ref, v) for v in map(view, items))

        def apply(kind_of_event: str, obj: dict[str, Any]) -> None:
            v = view(obj)
            if kind_of_event == "DELETED":
                self.probes.pop(v.ref, None)
            else:
                self.probes[v.ref] = v

        self._list_then_watch(PLURALS[kind], self.custom.list_cluster_custom_object,
                              (API_GROUP, API_VERSION, PLURALS[kind]), {}, relist, apply, stop)

    def watch_pods_forever(self, index: PodIndex, stop: threading.Event) -> None:
        """This node's pods only (field selector): the agent names local sides."""

        def apply(kind_of_event: str, obj: dict[str, Any]) -> None:
            info = pod_info(obj)
            if kind_of_event == "DELETED":
                index.delete(info.uid)
            else:
                index.upsert(info)
            index.expire()

        self._list_then_watch(
            f"pods of {self.node}", self.core.list_pod_for_all_namespaces, (),
            {"field_selector": f"spec.nodeName={self.node}"},
            lambda items: index.replace_all([pod_info(p) for p in items]), apply, stop)

    def node_labels(self) -> dict[str, str]:
        return dict(self.core.read_node(self.node).metadata.labels or {})

    def mine(self, labels: dict[str, str]) -> list[ProbeView]:
        with self._lock:
            return [p for p in self.probes.values() if applies(p, labels)]

    def reconcile(self, labels: dict[str, str]) -> list[ProbeView]:
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
        except Exception as exc:  # BpfUnavailable or a compile error: reported, never a crash
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("could not load programs: %s", self.load_error)
        return probes

    # --- reporting --------------------------------------------------------
    def write_report(self, probes: list[ProbeView], features: KernelFeatures) -> None:
        counters = self.agent.stats.kernel_counters
        usage = self.agent.sample_map_usage()
        programs = self.agent.program_ids()
        full = self.drop_watch.update(counters, time.monotonic())
        entries = [probe_entry(p, self.agent.plan, programs, usage, counters, self.load_error,
                               full) for p in sorted(probes, key=lambda p: p.ref)]
        attached = sum(1 for e in entries if e["state"] in ("Attached", "Degraded"))
        status = {
            "agentVersion": __version__, "kernelRelease": features.release,
            "kernelFeatures": features.as_report(),
            "headerSource": self.header_source,
            "heartbeatTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "probes": entries,
            "probesAttached": f"{attached}/{len(entries)}",
        }
        body = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "NodeReport",
                "metadata": {"name": self.node}, "spec": {"nodeName": self.node}}
        try:
            self.custom.create_cluster_custom_object(API_GROUP, API_VERSION, "nodereports", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.custom.patch_cluster_custom_object_status(
            API_GROUP, API_VERSION, "nodereports", self.node, {"status": status})


def _stdout_sink(records: list[ConnectionRecord]) -> None:
    for record in records:
        sys.stdout.write(json.dumps(record.to_dict(), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def run_in_cluster(node: str, features: KernelFeatures, interval: float,
                   metrics_port: int, cgroup_root: str | None = None,
                   map_endpoint: str | None = None, map_ca_file: str | None = None,
                   print_records: bool = False) -> int:
    pods = PodIndex()
    sinks: list[Callable[[list[ConnectionRecord]], None]] = []
    sender = None
    if map_endpoint:
        sender = ReportSender(map_endpoint, node, ca_file=map_ca_file)
        sinks.append(sender)
    if print_records or not map_endpoint:
        sinks.append(_stdout_sink)

    def sink(records: list[ConnectionRecord]) -> None:
        for each in sinks:
            each(records)

    nat = NatTable()
    nat_watcher = NatWatcher(nat)
    if nat_watcher.problem:
        log.warning("%s", nat_watcher.problem)
    agent = Agent(node, sink, features, cgroup_root, enrich=pods.enrich, nat=nat)
    agent.stats.report = sender.stats if sender else None
    cluster = ClusterAgent(node, agent, _load_config())
    if metrics_port >= 0:
        from traceprobe_agent.health import serve

        serve(agent, metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for kind in PLURALS:
        threading.Thread(target=cluster.watch_forever, args=(kind, stop), daemon=True,
                         name=f"watch-{kind}").start()
    threading.Thread(target=cluster.watch_pods_forever, args=(pods, stop), daemon=True,
                     name="watch-pods").start()
    labels: dict[str, str] = {}
    probes: list[ProbeView] = []
    next_tick = time.monotonic() + interval

    def report() -> None:
        try:
            cluster.write_report(probes, features)
        except API_ERRORS as exc:
            log.warning("writing NodeReport failed (%s); will retry", exc)

    while not stop.is_set():
        if cluster.changed.wait(timeout=max(0.0, min(1.0, next_tick - time.monotonic()))):
            cluster.changed.clear()
            try:
                labels = cluster.node_labels()
            except API_ERRORS as exc:
                log.warning("reading node %s failed (%s); keeping its last labels", node, exc)
            probes = cluster.reconcile(labels)
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
    # Leave a last word: every probe detached here.
    with contextlib.suppress(*API_ERRORS):
        cluster.write_report([ProbeView(**{**p.__dict__, "deleting": True}) for p in probes],
                             features)
    return 0
