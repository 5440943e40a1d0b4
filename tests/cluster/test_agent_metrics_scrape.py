"""The agent's /metrics beyond the node's loopback, against the real API server (RBAC
on): the real agent (cluster mode, as the chart's agent ServiceAccount with exactly
the chart's RBAC for agent.metrics.listen=hostIP) listens on the simulated node's IP
(the pod bridge's address, harness.pods; on this machine only) and a "Prometheus"
pod scrapes it from its own network namespace with real ServiceAccount tokens:

no token 401, a token without the chart's metrics-reader ClusterRole 403, with it
bound 200 and Prometheus text, unbound again 403 once the brief cache expires.
No probe is applied, so no BPF program is compiled: this is about the listeners.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import pods
from harness.chart import find, render, to_yaml
from harness.install import install
from harness.metrics import samples
from harness.prereq import require_root
from harness.procs import ManagedProcess, free_port
from harness.tools import REPO
from harness.waiting import wait_until
from traceprobe_operator.agent_workload import health_check

RELEASE, NS = "tpmetrics", "tpmetrics-system"
MONITORING, SHOP = "tpmetrics-monitoring", "tpmetrics-shop"
NODE = "tpmetrics-node"
READER = f"{RELEASE}-traceprobe-metrics-reader"
AGENT_SA = f"{RELEASE}-traceprobe-agent"

#: What a Prometheus with insecureSkipVerify does, run inside the scraper pod's netns.
SCRAPE = r"""
import json, ssl, sys, urllib.error, urllib.request
url, token = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token} if token else {})
try:
    with urllib.request.urlopen(request, context=ctx, timeout=10) as r:
        out = {"status": r.status, "body": r.read().decode(), "auth": None}
except urllib.error.HTTPError as e:
    out = {"status": e.code, "body": e.read().decode(), "auth": e.headers["WWW-Authenticate"]}
print(json.dumps(out))
"""


@dataclass
class MetricsWorld:
    cp: Any
    agent: ManagedProcess
    url: str  # https://<node IP>:<port>/metrics
    health_port: int
    tmp: Path
    scraper: pods.Pod

    def scrape(self, token: str | None, path: str = "/metrics") -> dict[str, Any]:
        result = self.scraper.run([sys.executable, "-c", SCRAPE,
                                   self.url.replace("/metrics", path), token or ""])
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer


def _token(cp: Any, namespace: str, name: str) -> str:
    config = yaml.safe_load(cp.serviceaccount_kubeconfig(namespace, name).read_text())
    token: str = config["users"][0]["user"]["token"]
    return token


def _apply(cp: Any, docs: list[dict[str, Any]], tmp: Path, name: str) -> None:
    path = tmp / f"{name}.yaml"
    path.write_text(to_yaml(docs))
    cp.kubectl("apply", "--validate=strict", "-f", str(path))


@pytest.fixture(scope="module")
def chart_docs() -> list[dict[str, Any]]:
    return render(sets=["agent.metrics.listen=hostIP"], release=RELEASE, namespace=NS)


@pytest.fixture(scope="module")
def world(control_plane: Any, chart_docs: list[dict[str, Any]],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsWorld]:
    require_root("serving on the pod bridge's address and a scraper pod's netns")
    tmp = tmp_path_factory.mktemp("agent-metrics")
    cp = control_plane
    install(cp)  # CRDs: the agent watches probes (none here)
    cp.kubectl("create", "namespace", NS, check=False)
    # Exactly the chart's agent RBAC in this mode, and the reader role it offers.
    agent_rbac = [d for d in chart_docs if d["kind"] in (
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding")
        and d["metadata"]["name"] in (AGENT_SA, f"{AGENT_SA}-metrics-auth", READER)]
    assert {(d["kind"], d["metadata"]["name"]) for d in agent_rbac} == {
        ("ServiceAccount", AGENT_SA), ("ClusterRole", AGENT_SA),
        ("ClusterRoleBinding", AGENT_SA), ("ClusterRole", f"{AGENT_SA}-metrics-auth"),
        ("ClusterRoleBinding", f"{AGENT_SA}-metrics-auth"), ("ClusterRole", READER)}
    _apply(cp, agent_rbac, tmp, "agent-rbac")
    factory = pods.PodFactory(cp.api_client(), node=NODE)  # also the bridge: the node's IP
    scraper = factory.create("prometheus-0", MONITORING)
    port, health_port = free_port(), free_port()
    key_dir = tmp / "agent-tmp"
    key_dir.mkdir()
    env = {**os.environ, "KUBECONFIG": str(cp.serviceaccount_kubeconfig(NS, AGENT_SA)),
           "PYTHONUNBUFFERED": "1", "TMPDIR": str(key_dir)}
    agent = ManagedProcess("metrics-agent", [
        sys.executable, "-m", "traceprobe_agent", "--node-name", NODE, "--interval", "1",
        "--metrics-address", factory.node_ip, "--metrics-port", str(port),
        "--health-port", str(health_port)], tmp / "agent.log", env=env, cwd=REPO)
    url = f"https://{factory.node_ip}:{port}/metrics"
    try:
        wait_until(lambda: f"health and metrics on {url}" in agent.log.read_text()
                   or not agent.alive(), timeout=60, what="the agent's metrics listener")
        assert agent.alive(), agent.log_tail()
        yield MetricsWorld(cp, agent, url, health_port, tmp, scraper)
    finally:
        agent.stop()
        factory.cleanup()
        cp.kubectl("delete", "clusterrolebinding", f"{READER}-test", "--ignore-not-found",
                   check=False)


def test_scrapes_need_a_token_that_rbac_allows_get_metrics(world: MetricsWorld) -> None:
    cp = world.cp
    anonymous = world.scrape(None)
    assert anonymous["status"] == 401 and anonymous["auth"].startswith("Bearer")
    assert "traceprobe_agent" not in anonymous["body"]
    assert world.scrape("not-a-token")["status"] == 401
    prometheus = _token(cp, MONITORING, "prometheus")
    web = _token(cp, SHOP, "web")
    denied = world.scrape(prometheus)
    assert denied["status"] == 403, denied
    assert f"system:serviceaccount:{MONITORING}:prometheus may not get /metrics" in (
        denied["body"])

    # What NOTES.txt tells users to do: bind the chart's reader role to Prometheus.
    cp.kubectl("create", "clusterrolebinding", f"{READER}-test", f"--clusterrole={READER}",
               f"--serviceaccount={MONITORING}:prometheus")
    allowed = wait_until(lambda: (a := world.scrape(prometheus))["status"] == 200 and a,
                         timeout=30, interval=1, what="200 once the reader role is bound")
    records = samples(allowed["body"], "traceprobe_agent_records_total")
    assert list(records.values()) == [0.0]  # Prometheus text, nothing traced here
    assert samples(allowed["body"], "process_resident_memory_bytes")
    assert world.scrape(web)["status"] == 403  # the binding is Prometheus's alone

    cp.kubectl("delete", "clusterrolebinding", f"{READER}-test")
    wait_until(lambda: world.scrape(prometheus)["status"] == 403, timeout=30, interval=1,
               what="403 again once the cached decision expired")
    assert "Traceback" not in world.agent.log.read_text()


def test_probes_stay_open_and_the_kubelets_exec_probe_works(world: MetricsWorld) -> None:
    live = world.scrape(None, "/livez")
    assert (live["status"], live["body"]) == (200, "ok\n")
    ready = world.scrape(None, "/readyz")  # no probe applies to this node: not ready
    assert (ready["status"], ready["body"]) == (503, "not ready\n")  # no detail off-node
    # The DaemonSet's exec probe, as the kubelet runs it in the agent's (host) netns.
    def probe(path: str) -> int:
        return subprocess.run(health_check(world.health_port, path), capture_output=True,
                              timeout=10).returncode

    assert probe("/livez") == 0 and probe("/readyz") != 0
    # The probe listener is on the node's loopback only: pods cannot reach it.
    unreachable = f"http://{pods.GATEWAY4}:{world.health_port}/livez"
    result = world.scraper.run([sys.executable, "-c", SCRAPE, unreachable, ""], check=False)
    assert result.returncode != 0 and "Connection refused" in result.stderr


def test_the_private_key_stays_in_memory_and_the_certificate_is_logged(
        world: MetricsWorld) -> None:
    assert not list((world.tmp / "agent-tmp").rglob("*"))
    log = world.agent.log.read_text()
    assert "metrics certificate (self-signed) SHA-256 " in log
    assert "Traceback" not in log  # nor from the exec probes of the test before
    fds = [os.readlink(f"/proc/{world.agent.pid}/fd/{fd}")
           for fd in os.listdir(f"/proc/{world.agent.pid}/fd")]
    assert not [fd for fd in fds if "traceprobe-agent-key" in fd], "key memfd left open"


def test_the_agents_role_allows_the_reviews_only_in_this_mode(
        world: MetricsWorld, chart_docs: list[dict[str, Any]]) -> None:
    kubeconfig = world.cp.serviceaccount_kubeconfig(NS, AGENT_SA)
    for resource in ("tokenreviews.authentication.k8s.io",
                     "subjectaccessreviews.authorization.k8s.io"):
        can = world.cp.kubectl("auth", "can-i", "create", resource, kubeconfig_path=kubeconfig,
                               check=False)
        assert can.stdout.strip() == "yes", resource
    default = render(release=RELEASE, namespace=NS)
    assert not [d for d in default if d["metadata"]["name"] == f"{AGENT_SA}-metrics-auth"]
    assert find(default, "ClusterRole", AGENT_SA) == find(chart_docs, "ClusterRole", AGENT_SA)
