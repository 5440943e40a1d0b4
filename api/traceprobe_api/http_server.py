"""An HTTP server that a slow or numerous set of clients cannot exhaust.

A thread per connection, but at most `max_connections` at once (more are closed
at once, and counted), each with a deadline for every read and write; TLS, when
given, is negotiated in the connection's thread so a slow handshake holds up no
one else. The agent's health and metrics listeners and the map's view use it.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("traceprobe.http")

#: Seconds a client may take for its TLS handshake, for each read of its request and
#: each write of the answer (a handler's own `timeout` sets the latter two).
CLIENT_TIMEOUT_SECONDS = 10.0


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 tls: ssl.SSLContext | None = None, max_connections: int = 16) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.tls = tls
        self.refused_connections = 0
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused_connections += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError | ssl.SSLError):
            return  # the client went away or was too slow: nothing to report
        log.warning("answering %s failed", client_address, exc_info=True)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CLIENT_TIMEOUT_SECONDS)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # not TLS, or gone
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()
