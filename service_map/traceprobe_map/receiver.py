"""Agents' edge reports in: an OTLP/gRPC logs endpoint (the Collector's own API).

A request that is not entirely valid is answered with OTLP partial success:
the count of rejected records and the first reasons, so the sending agent logs
exactly what was wrong; the valid records of the same request are kept. With
`authenticate`, a request must first carry an agent's token (ingest_auth): a
refused one is answered with an error status and nothing of it is read, and an
accepted one's records are the token's node's, whatever node they name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from traceprobe_api.ingest_limits import MAX_MESSAGE_BYTES
from traceprobe_api.record_otlp import decode
from traceprobe_api.records import ConnectionRecord
from traceprobe_map.ingest_auth import Cause, Identity

log = logging.getLogger("traceprobe.map.receiver")
MAX_CONCURRENT_RPCS = 16  # four decode at once; the rest wait, bounded
RecordSink = Callable[[list[ConnectionRecord]], int]
"""Takes records, returns how many it had to drop."""


@dataclass
class ReceiverStats:
    requests: int = 0
    records: int = 0
    rejected_records: int = 0
    dropped_records: int = 0
    reattributed_records: int = 0  # named another node than their sender's token


Admit = Callable[[list[ConnectionRecord]], tuple[list[ConnectionRecord], int, list[str]]]
"""Decoded records -> (kept, refused count, reasons): admission.admit at the map's clock."""
Authenticate = Callable[[str | None, str], Identity]
"""(authorization metadata, peer) -> who sent it: ingest_auth.IngestAuth.check."""

_STATUS = {Cause.NO_TOKEN: grpc.StatusCode.UNAUTHENTICATED,
           Cause.NOT_AUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
           Cause.NOT_AGENT: grpc.StatusCode.PERMISSION_DENIED,
           Cause.NO_NODE: grpc.StatusCode.PERMISSION_DENIED,
           Cause.REVIEW_FAILED: grpc.StatusCode.UNAVAILABLE}  # the agent retries


def _authorization(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink: RecordSink, stats: ReceiverStats, admit: Admit | None,
                 authenticate: Authenticate | None) -> None:
        self.sink = sink
        self.stats = stats
        self.admit = admit
        self.authenticate = authenticate

    def Export(self, request: logs_service_pb2.ExportLogsServiceRequest,
               context: grpc.ServicerContext) -> logs_service_pb2.ExportLogsServiceResponse:
        node = None
        if self.authenticate is not None:
            identity = self.authenticate(_authorization(context), context.peer())
            if identity.node is None:  # counted by cause in the authenticator
                assert identity.cause is not None
                context.abort(_STATUS[identity.cause], identity.detail)  # raises
            node = identity.node
        records, errors = decode(request)
        if node is not None:
            moved = [i for i, r in enumerate(records) if r.node != node]
            for i in moved:
                records[i] = records[i].replaced(node=node)
            self.stats.reattributed_records += len(moved)
        refused = len(errors)
        if self.admit is not None and records:
            records, late, reasons = self.admit(records)
            refused += late
            errors += reasons
        self.stats.requests += 1
        self.stats.records += len(records)
        self.stats.rejected_records += refused
        dropped = self.sink(records) if records else 0
        self.stats.dropped_records += dropped
        response = logs_service_pb2.ExportLogsServiceResponse()
        if refused or dropped:
            reasons = errors[:3] + ([f"{dropped} records dropped: service map over its "
                                     "pending-record or per-bucket edge limit"] if dropped else [])
            if refused:
                log.warning("rejected %d records from %s: %s", refused, context.peer(),
                            "; ".join(errors[:3]))
            response.partial_success.rejected_log_records = refused + dropped
            response.partial_success.error_message = "; ".join(reasons)
        return response


class _CertificateFiles:
    """The ingest's certificate, read again when its files change (a renewal rewrites the
    Secret volume): gRPC asks before each new handshake."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, ...]:
        stats = [f.stat() for f in (self.cert, self.key)]
        return tuple(v for st in stats for v in (st.st_ino, st.st_mtime_ns))

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.key.read_bytes(), self.cert.read_bytes())])

    def changed(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            stamp = self._stamp()
            if stamp == self._seen:
                return None
            configuration = self.configuration()
        except (OSError, ValueError) as exc:  # mid-rewrite, or broken: keep the last one
            log.warning("cannot read the renewed ingest certificate (%s); keeping the "
                        "current one", exc)
            return None
        self._seen = stamp
        log.info("ingest certificate renewed from %s", self.cert)
        return configuration


def serve(sink: RecordSink, address: str, stats: ReceiverStats | None = None,
          tls: tuple[Path, Path] | None = None, admit: Admit | None = None,
          max_message_bytes: int = MAX_MESSAGE_BYTES,
          max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS,
          authenticate: Authenticate | None = None,
          ) -> tuple[grpc.Server, int, ReceiverStats]:
    """Start the ingest server on `address` (host:port, port 0 picks one).
    `tls` is (certificate chain, private key) PEM files. Returns (server, port, stats).
    Beyond `max_concurrent_rpcs` in progress, a request is answered RESOURCE_EXHAUSTED
    (agents retry with backoff) rather than queued without bound."""
    stats = stats or ReceiverStats()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest"),
                         options=[("grpc.max_receive_message_length", max_message_bytes)],
                         maximum_concurrent_rpcs=max_concurrent_rpcs)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _LogsService(sink, stats, admit, authenticate), server)
    if tls is not None:
        files = _CertificateFiles(*tls)
        port = server.add_secure_port(address, grpc.dynamic_ssl_server_credentials(
            files.configuration(), files.changed))
    else:
        port = server.add_insecure_port(address)
    server.start()
    return server, port, stats
