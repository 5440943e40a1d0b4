"""Only agents write the map: the real map process over TLS, checking each sender's
token with the real API server (TokenReview); the agent's own sender with a
pod-bound projected-style token. Refusals are counted by cause and keep nothing;
an agent claiming another node gets its token's node."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from harness.install import NAMESPACE, install
from harness.metrics import by_label, samples
from harness.pki import make_ca, server_cert
from harness.procs import ManagedProcess, free_port, wait_for_port
from harness.tools import REPO
from harness.waiting import wait_until
from harness.workloads import Objects
from traceprobe_agent.report_sender import ReportSender
from traceprobe_api.record_otlp import encode
from traceprobe_api.records import ConnectionRecord, Role

AUDIENCE = "traceprobe-service-map"
AGENT_SA = "traceprobe-agent"
NODE, CLAIMED = "auth-node-a", "auth-node-b"


def _records(n: int, port: int) -> list[ConnectionRecord]:
    end = datetime.now(UTC)
    return [ConnectionRecord(node=CLAIMED, role=Role.CLIENT, transport="tcp", family="ipv4",
                             remote_ip="10.77.0.9", remote_port=port, opened=1,
                             interval_start=end - timedelta(seconds=1), interval_end=end)
            for _ in range(n)]


@dataclass
class AuthMap:
    proc: ManagedProcess
    ingest: str
    http_port: int
    ca: Path

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return str(reply.read().decode())

    def value(self, name: str) -> float:
        """The one sample of an unlabelled counter."""
        return samples(self.metrics(), name)[frozenset()]

    def refused(self) -> dict[str, float]:
        return by_label(self.metrics(), "traceprobe_map_ingest_refused_requests_total", "cause")

    def api_map(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.http_port}/api/map"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return dict(json.load(reply))

    def export(self, token: str | None) -> Any:
        """One raw OTLP request over TLS, as any client in the cluster could send it."""
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())
        with grpc.secure_channel(self.ingest, creds) as channel:
            stub = LogsServiceStub(channel)  # type: ignore[no-untyped-call]
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            return stub.Export(encode(_records(3, 4000), CLAIMED), timeout=10,
                               metadata=metadata)


def _token(core: Any, name: str, namespace: str, audience: str | None,
           pod: Any = None) -> str:
    spec: dict[str, Any] = {"expirationSeconds": 3600}
    if audience:
        spec["audiences"] = [audience]
    if pod is not None:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1",
                                  "name": pod.metadata.name, "uid": pod.metadata.uid}
    return str(core.create_namespaced_service_account_token(
        name, namespace, {"spec": spec}).status.token)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _resigned(token: str, key: Path, shift_seconds: int) -> str:
    """`token` with its times moved by `shift_seconds`, signed again with the cluster's own
    ServiceAccount key: a genuine token of the API server's issuer, but for other times."""
    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for claim in ("iat", "nbf", "exp"):
        claims[claim] += shift_seconds
    signed = f"{header}.{_b64(json.dumps(claims).encode())}"
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)],
                               input=signed.encode(), capture_output=True, check=True).stdout
    return f"{signed}.{_b64(signature)}"


@pytest.fixture(scope="module")
def world(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from kubernetes import client

    install(control_plane)
    tmp = tmp_path_factory.mktemp("ingest-auth")
    api = control_plane.api_client()
    core = client.CoreV1Api(api)
    objects = Objects(api)
    objects.ensure_namespace("shop")
    objects.ensure_node(NODE, "10.77.0.1")
    for namespace, name in ((NAMESPACE, AGENT_SA), ("shop", "intruder")):
        control_plane.kubectl("create", "serviceaccount", name, "-n", namespace, check=False)
    pod = core.create_namespaced_pod(NAMESPACE, {
        "metadata": {"name": "agent-on-a"},
        "spec": {"nodeName": NODE, "serviceAccountName": AGENT_SA,
                 "containers": [{"name": "agent", "image": "traceprobe/agent:test"}]}})
    ca = make_ca(tmp / "pki", "map-ca")
    cert, key = server_cert(tmp / "pki", ca, "map")
    ingest_port, http_port = free_port(), free_port()
    kubeconfig = control_plane.serviceaccount_kubeconfig(NAMESPACE, "traceprobe-service-map")
    proc = ManagedProcess("service-map-auth", [
        sys.executable, "-m", "traceprobe_map", "--ingest-address", f"127.0.0.1:{ingest_port}",
        "--http-host", "127.0.0.1", "--http-port", str(http_port),
        "--bucket-seconds", "1", "--lateness-seconds", "1",
        "--ingest-tls-cert", str(cert), "--ingest-tls-key", str(key),
        "--agent-service-account", f"{NAMESPACE}/{AGENT_SA}"], tmp / "service-map.log",
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}, cwd=REPO)
    wait_for_port(http_port, 30, proc.popen)
    try:
        yield core, pod, AuthMap(proc, f"127.0.0.1:{ingest_port}", http_port, ca)
    finally:
        proc.stop()
        core.delete_namespaced_pod("agent-on-a", NAMESPACE, grace_period_seconds=0)


def _refusal(auth_map: AuthMap, token: str | None) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        auth_map.export(token)
    return caught.value.code(), caught.value.details() or ""


def test_only_a_pod_bound_agent_token_for_the_maps_audience_is_accepted(
        world: Any, control_plane: Any) -> None:
    core, pod, auth_map = world
    agent = _token(core, AGENT_SA, NAMESPACE, AUDIENCE, pod)
    cases = [
        ("no_token", None, grpc.StatusCode.UNAUTHENTICATED, "bearer token is required"),
        ("not_agent", _token(core, "intruder", "shop", AUDIENCE),
         grpc.StatusCode.PERMISSION_DENIED, "system:serviceaccount:shop:intruder"),
        # The agent's own account, but a token for the API server, not for the map.
        ("not_authenticated", _token(core, AGENT_SA, NAMESPACE, None, pod),
         grpc.StatusCode.UNAUTHENTICATED, AUDIENCE),
        ("not_authenticated", control_plane.admin_token, grpc.StatusCode.UNAUTHENTICATED,
         AUDIENCE),
        # Genuinely signed by the cluster's key, but it expired an hour ago.
        ("not_authenticated", _resigned(agent, control_plane.pki / "sa.key", -7200),
         grpc.StatusCode.UNAUTHENTICATED, "expired"),
        ("no_node", _token(core, AGENT_SA, NAMESPACE, AUDIENCE),
         grpc.StatusCode.PERMISSION_DENIED, "not bound to a pod on a node"),
        ("no_token", "", grpc.StatusCode.UNAUTHENTICATED, "bearer token is required"),
    ]
    for cause, token, code, words in cases:
        before = auth_map.refused().get(cause, 0)
        got_code, details = _refusal(auth_map, token)
        assert (got_code, cause) == (code, cause) and words in details, details
        assert auth_map.refused()[cause] == before + 1
    # The same signing, moved into the future instead: accepted, so only the time was wrong.
    reply = auth_map.export(_resigned(agent, control_plane.pki / "sa.key", 60))
    assert reply.partial_success.rejected_log_records == 0
    accepted = samples(auth_map.metrics(), "traceprobe_map_records_total")
    assert accepted[frozenset({("outcome", "accepted")})] == 3  # refused requests kept nothing
    log = auth_map.proc.log.read_text()
    assert log.count("refused an ingest request") == len({c for c, *_ in cases})


def test_the_agents_sender_is_accepted_and_its_records_get_the_tokens_node(
        world: Any, tmp_path: Path) -> None:
    core, pod, auth_map = world
    token_file = tmp_path / "token"
    token_file.write_text(_token(core, AGENT_SA, NAMESPACE, AUDIENCE, pod) + "\n")
    reviews_before = auth_map.value("traceprobe_map_ingest_token_reviews_total")
    moved_before = auth_map.value("traceprobe_map_reattributed_records_total")
    sender = ReportSender(auth_map.ingest, CLAIMED, ca_file=str(auth_map.ca),
                          token_file=str(token_file))
    try:
        for _ in range(5):
            sender(_records(2, 5000))
        wait_until(lambda: sender.stats.sent_records == 10, timeout=20,
                   what="the agent's records accepted by the map")
    finally:
        sender.close()
    assert auth_map.value("traceprobe_map_reattributed_records_total") - moved_before == 10
    # Several requests, one review: the rest came from the cache.
    assert auth_map.value("traceprobe_map_ingest_token_reviews_total") - reviews_before == 1

    def edge_to_5000() -> dict[str, Any] | None:
        return next((e for e in auth_map.api_map()["edges"] if e.get("port") == 5000), None)

    edge = wait_until(edge_to_5000, timeout=20, what="the edge on the map")
    assert edge["source"] == f"node:{NODE}", edge
    assert not [n for n in auth_map.api_map()["nodes"] if CLAIMED in n["id"]]


def test_a_token_of_a_deleted_pod_is_refused(world: Any) -> None:
    core, _, auth_map = world
    ghost = core.create_namespaced_pod(NAMESPACE, {
        "metadata": {"name": "agent-gone"},
        "spec": {"nodeName": NODE, "serviceAccountName": AGENT_SA,
                 "containers": [{"name": "agent", "image": "traceprobe/agent:test"}]}})
    token = _token(core, AGENT_SA, NAMESPACE, AUDIENCE, ghost)
    core.delete_namespaced_pod("agent-gone", NAMESPACE, grace_period_seconds=0)
    wait_until(lambda: not core.list_namespaced_pod(
        NAMESPACE, field_selector="metadata.name=agent-gone").items, timeout=20,
        what="the pod gone")
    code, details = _refusal(auth_map, token)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "not accept" in details, details
