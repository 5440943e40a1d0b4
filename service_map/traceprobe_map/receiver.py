"""Agents' edge reports in: an OTLP/gRPC logs endpoint (the Collector's own API).

A request that is not entirely valid is answered with OTLP partial success:
the count of rejected records and the first reasons, so the sending agent logs
exactly what was wrong; the valid records of the same request are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from traceprobe_api.ingest_limits import MAX_MESSAGE_BYTES
from traceprobe_api.record_otlp import decode
from traceprobe_api.records import ConnectionRecord

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


Admit = Callable[[list[ConnectionRecord]], tuple[list[ConnectionRecord], int, list[str]]]
"""Decoded records -> (kept, refused count, reasons): admission.admit at the map's clock."""


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink: RecordSink, stats: ReceiverStats, admit: Admit | None) -> None:
        self.sink = sink
        self.stats = stats
        self.admit = admit

    def Export(self, request: logs_service_pb2.ExportLogsServiceRequest,
               context: grpc.ServicerContext) -> logs_service_pb2.ExportLogsServiceResponse:
        records, errors = decode(request)
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


def serve(sink: RecordSink, address: str, stats: ReceiverStats | None = None,
          tls: tuple[bytes, bytes] | None = None, admit: Admit | None = None,
          max_message_bytes: int = MAX_MESSAGE_BYTES,
          max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS,
          ) -> tuple[grpc.Server, int, ReceiverStats]:
    """Start the ingest server on `address` (host:port, port 0 picks one).
    `tls` is (certificate chain, private key) in PEM. Returns (server, port, stats).
    Beyond `max_concurrent_rpcs` in progress, a request is answered RESOURCE_EXHAUSTED
    (agents retry with backoff) rather than queued without bound."""
    stats = stats or ReceiverStats()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest"),
                         options=[("grpc.max_receive_message_length", max_message_bytes)],
                         maximum_concurrent_rpcs=max_concurrent_rpcs)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _LogsService(sink, stats, admit), server)
    if tls is not None:
        port = server.add_secure_port(address, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    else:
        port = server.add_insecure_port(address)
    server.start()
    return server, port, stats
