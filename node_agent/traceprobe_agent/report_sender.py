"""Edge reports to the service map over OTLP/gRPC, buffered and bounded.

The agent's drain loop must never block on the network: records go into a
bounded queue and a sender thread ships them. While the map is unreachable the
queue holds up to `max_queued_records`; beyond that the oldest batches are
dropped and counted (newer data is worth more than older for a live map), and
sending resumes with backoff once the map answers again. A batch larger than the
map takes in one request (records, encoded bytes) goes out in parts that fit.
With `token_file` each request carries the pod's projected ServiceAccount token,
read again for every request (the kubelet rotates it); a refusal keeps the
records queued and is retried like an unreachable map.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from traceprobe_api.ingest_limits import MAX_RECORDS_PER_REQUEST, MAX_REQUEST_BYTES
from traceprobe_api.record_otlp import encode
from traceprobe_api.records import ConnectionRecord

log = logging.getLogger("traceprobe.agent.report")


@dataclass
class SenderStats:
    sent_records: int = 0
    dropped_records: int = 0  # queue full while the map was unreachable
    rejected_records: int = 0  # the map refused them (partial success)
    failed_exports: int = 0
    queued_records: int = 0


class ReportSender:
    def __init__(self, endpoint: str, node: str, max_queued_records: int = 200_000,
                 ca_file: str | None = None, timeout_seconds: float = 10.0,
                 max_backoff_seconds: float = 30.0, token_file: str | None = None) -> None:
        self.endpoint = endpoint
        self.node = node
        self.token_file = token_file
        self.max_queued_records = max_queued_records
        self.timeout_seconds = timeout_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.stats = SenderStats()
        if ca_file:
            with open(ca_file, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            self._channel = grpc.secure_channel(endpoint, creds)
        else:
            self._channel = grpc.insecure_channel(endpoint)
        self._stub = LogsServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._queue: deque[list[ConnectionRecord]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="report-sender", daemon=True)
        self._thread.start()

    def __call__(self, records: list[ConnectionRecord]) -> None:
        """The agent's sink: enqueue, never block."""
        with self._cond:
            self._queue.append(records)
            self.stats.queued_records += len(records)
            while self.stats.queued_records > self.max_queued_records and len(self._queue) > 1:
                oldest = self._queue.popleft()
                self.stats.queued_records -= len(oldest)
                self.stats.dropped_records += len(oldest)
            self._cond.notify()

    def _split_front(self, batch: list[ConnectionRecord], at: int) -> list[ConnectionRecord]:
        """Replace the queue's front `batch` by its two parts; return the first."""
        first, rest = batch[:at], batch[at:]
        with self._cond:
            if self._queue and self._queue[0] is batch:
                self._queue.popleft()
                self._queue.extendleft([rest, first])
        return first

    def _request(self, batch: list[ConnectionRecord]
                 ) -> tuple[list[ConnectionRecord], ExportLogsServiceRequest]:
        """The front batch as one request the map accepts: halved until it fits."""
        if len(batch) > MAX_RECORDS_PER_REQUEST:
            batch = self._split_front(batch, MAX_RECORDS_PER_REQUEST)
        request: ExportLogsServiceRequest = encode(batch, self.node)
        while request.ByteSize() > MAX_REQUEST_BYTES and len(batch) > 1:
            batch = self._split_front(batch, len(batch) // 2)
            request = encode(batch, self.node)
        return batch, request

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        if self.token_file is None:
            return ()
        try:
            with open(self.token_file, encoding="ascii") as f:
                return (("authorization", f"Bearer {f.read().strip()}"),)
        except (OSError, ValueError) as exc:
            log.warning("cannot read the token for the service map from %s (%s); %d records "
                        "queued", self.token_file, exc, self.stats.queued_records)
            return None

    def _send(self, batch: list[ConnectionRecord], request: ExportLogsServiceRequest) -> bool:
        metadata = self._metadata()
        if metadata is None:
            self.stats.failed_exports += 1
            return False
        try:
            response = self._stub.Export(request, timeout=self.timeout_seconds,
                                         metadata=metadata)
        except grpc.RpcError as exc:
            self.stats.failed_exports += 1
            code = exc.code() if hasattr(exc, "code") else None
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                log.error("service map at %s refused this agent (%s: %s); %d records queued",
                          self.endpoint, code.name, exc.details() if hasattr(exc, "details")
                          else exc, self.stats.queued_records)
            else:
                log.warning("service map at %s unreachable (%s); %d records queued",
                            self.endpoint, code or exc, self.stats.queued_records)
            return False
        rejected = int(response.partial_success.rejected_log_records)
        if rejected:
            self.stats.rejected_records += rejected
            log.error("service map rejected %d records: %s", rejected,
                      response.partial_success.error_message)
        self.stats.sent_records += len(batch) - rejected
        return True

    def _run(self) -> None:
        backoff = 0.5
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._queue[0]
            batch, request = self._request(batch)
            if self._send(batch, request):
                backoff = 0.5
                with self._cond:
                    if self._queue and self._queue[0] is batch:
                        self._queue.popleft()
                        self.stats.queued_records -= len(batch)
                continue
            with self._cond:
                if self._stopping:
                    return
                self._cond.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff_seconds)

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Send what is queued (up to the timeout), then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout_seconds)
        self._channel.close()
