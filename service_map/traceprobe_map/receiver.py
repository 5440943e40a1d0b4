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

from traceprobe_api.record_otlp import decode
from traceprobe_api.records import ConnectionRecord

log = logging.getLogger("traceprobe.map.receiver")
RecordSink = Callable[[list[ConnectionRecord]], int]
"""Takes records, returns how many it had to drop."""


@dataclass
class ReceiverStats:
    requests: int = 0
    records: int = 0
    rejected_records: int = 0
    dropped_records: int = 0


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink: RecordSink, stats: ReceiverStats) -> None:
        self.sink = sink
        self.stats = stats

    def Export(self, request: logs_service_pb2.ExportLogsServiceRequest,
               context: grpc.ServicerContext) -> logs_service_pb2.ExportLogsServiceResponse:
        records, errors = decode(request)
        self.stats.requests += 1
        self.stats.records += len(records)
        self.stats.rejected_records += len(errors)
        dropped = self.sink(records) if records else 0
        self.stats.dropped_records += dropped
        response = logs_service_pb2.ExportLogsServiceResponse()
        if errors or dropped:
            reasons = errors[:3] + ([f"{dropped} records dropped: service map over its "
                                     "pending-record limit"] if dropped else [])
            if errors:
                log.warning("rejected %d records from %s: %s", len(errors), context.peer(),
                            "; ".join(errors[:3]))
            response.partial_success.rejected_log_records = len(errors) + dropped
            response.partial_success.error_message = "; ".join(reasons)
        return response


def serve(sink: RecordSink, address: str, stats: ReceiverStats | None = None,
          tls: tuple[bytes, bytes] | None = None,
          max_message_bytes: int = 64 * 1024 * 1024) -> tuple[grpc.Server, int, ReceiverStats]:
    """Start the ingest server on `address` (host:port, port 0 picks one).
    `tls` is (certificate chain, private key) in PEM. Returns (server, port, stats)."""
    stats = stats or ReceiverStats()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest"),
                         options=[("grpc.max_receive_message_length", max_message_bytes)])
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        _LogsService(sink, stats), server)
    if tls is not None:
        port = server.add_secure_port(address, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    else:
        port = server.add_insecure_port(address)
    server.start()
    return server, port, stats
