"""The map view's server under many or slow viewers: snapshots are made one at a time and
shared, connections are capped, and a client that sends nothing is let go."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import known_maps as shop
from harness.map_server import get
from traceprobe_map import http_api
from traceprobe_map.http_api import MapApi, serve
from traceprobe_map.snapshot import MapSnapshot


class SlowSource(shop.StaticSource):
    """A snapshot that takes a while, as a long window of many edges does."""

    def __init__(self) -> None:
        super().__init__(shop.shop_snapshot())
        self.making = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def snapshot(self, window_seconds: float | None = None) -> MapSnapshot:
        with self._lock:
            self.making += 1
            self.most_at_once = max(self.most_at_once, self.making)
        time.sleep(0.3)
        try:
            return super().snapshot(window_seconds)
        finally:
            with self._lock:
                self.making -= 1


def test_many_viewers_cost_one_snapshot_at_a_time() -> None:
    source = SlowSource()
    api = MapApi(source, static={})
    queries = ["/api/map", "/api/map?window=60s", "/api/filters", "/api/graph/data"] * 6
    with ThreadPoolExecutor(len(queries)) as pool:
        replies = list(pool.map(api.get, queries))
    assert all(r.status == 200 for r in replies)
    assert source.most_at_once == 1
    assert sorted(source.windows, key=str) == [60.0, None]  # one per distinct window


def test_connections_are_capped_and_a_silent_client_is_let_go(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_api._Handler, "timeout", 1.0)
    server = serve(shop.StaticSource(shop.shop_snapshot()), "127.0.0.1", 0, max_connections=2)
    port = server.server_address[1]
    try:
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            assert third.recv(100) == b""  # no slot: closed at once
        assert server.refused_connections == 1
        for s in silent:  # each is closed by the server once its read deadline passes
            s.settimeout(5)
            assert s.recv(100) == b""
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        for s in silent:
            s.close()
    finally:
        server.shutdown()
        server.server_close()
