"""Known traffic, run inside netns pods: the independent truth for agent tests.

    traffic.py serve PORT RESPONSE_BYTES [--reset] [--count N] [--family 4|6]
                     [--ready-file PATH] [--log-peers]
    traffic.py dial HOST PORT REQUEST_BYTES [--count N] [--parallel P] [--hold S]
    traffic.py stream HOST PORT BYTES
    traffic.py udp-echo PORT [--count N] [--family 4|46] [--ready-file PATH]
    traffic.py udp-call HOST PORT SIZE... [--host6 HOST6] [--connect]

`serve` prints "ready" once listening (and creates --ready-file, for an exec
readiness probe that adds no connection of its own); with --log-peers it prints
"peer IP PORT" for each connection it accepts. It reads each request fully (until the
client half-closes), answers RESPONSE_BYTES and closes (or resets with --reset).
`dial` prints one JSON line: connections completed, failed (with errno names),
bytes sent and received. `udp-echo` answers each datagram (IPv4, and IPv6 with
--family 46) with one half its size; after N of them (0: never) it prints what it
received and exits. `udp-call` sends each SIZE once over an unconnected IPv4 socket
(sendto; connected with --connect), and with --host6 once more over a connected IPv6
one (send), waits for each answer, and prints the bytes each way per family. Plain
stdlib Python: it runs under /usr/bin/python3.
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import socket
import struct
import threading
import time


def _recv_all(conn: socket.socket) -> int:
    total = 0
    while chunk := conn.recv(65536):
        total += len(chunk)
    return total


def serve(port: int, response: int, reset: bool, count: int, family: int,
          ready_file: str = "", log_peers: bool = False) -> None:
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    srv = socket.socket(af, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if af == socket.AF_INET6:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
    srv.bind(("::" if af == socket.AF_INET6 else "0.0.0.0", port))
    srv.listen(128)
    print("ready", flush=True)
    if ready_file:
        open(ready_file, "w").close()
    served = 0
    while count <= 0 or served < count:
        conn, peer = srv.accept()
        served += 1
        if log_peers:
            print(f"peer {peer[0].removeprefix('::ffff:')} {peer[1]}", flush=True)
        threading.Thread(target=_handle, args=(conn, response, reset), daemon=True).start()
    time.sleep(0.5)


def _handle(conn: socket.socket, response: int, reset: bool) -> None:
    if reset:
        conn.recv(1)
        # SO_LINGER with 0 timeout: close() sends RST instead of FIN.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        return
    _recv_all(conn)
    conn.sendall(b"r" * response)
    conn.close()


def dial(host: str, port: int, request: int, count: int, parallel: int, hold: float,
         timeout: float, every: float = 0.0, payload: str = "q") -> None:
    body = (payload.encode() * (request // max(1, len(payload)) + 1))[:request]
    counts = {"completed": 0, "sent": 0, "received": 0}
    failed: dict[str, int] = {}
    lock = threading.Lock()

    def one() -> None:
        try:
            conn = socket.create_connection((host, port), timeout=timeout)
            conn.sendall(body)
            if hold:
                time.sleep(hold)
            conn.shutdown(socket.SHUT_WR)
            got = _recv_all(conn)
            conn.close()
            with lock:
                counts["completed"] += 1
                counts["sent"] += request
                counts["received"] += got
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            with lock:
                failed[name] = failed.get(name, 0) + 1

    start = 0
    while count <= 0 or start < count:  # count 0 with --every: until killed (the demo)
        batch = parallel if count <= 0 else min(parallel, count - start)
        threads = [threading.Thread(target=one) for _ in range(batch)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        start += batch
        if every:
            time.sleep(every)
    print(json.dumps({**counts, "failed": failed}), flush=True)


def udp_echo(port: int, count: int, family: str, ready_file: str) -> None:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM)]
    socks[0].bind(("0.0.0.0", port))
    if family == "46":
        socks.append(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
        socks[1].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        socks[1].bind(("::", port))
    print("ready", flush=True)
    if ready_file:
        open(ready_file, "w").close()
    seen = {"in": 0, "bytes_in": 0}
    while count <= 0 or seen["in"] < count:
        ready, _, _ = select.select(socks, [], [])
        data, peer = ready[0].recvfrom(65535)
        seen["in"] += 1
        seen["bytes_in"] += len(data)
        ready[0].sendto(b"r" * (len(data) // 2), peer)
    print(json.dumps(seen), flush=True)


def udp_call(host: str, port: int, sizes: list[int], host6: str, connect: bool) -> None:
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v4.settimeout(10)
    if connect:
        v4.connect((host, port))
    v6 = None
    if host6:
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        v6.settimeout(10)
        v6.connect((host6, port))
    done = {"v4": [0, 0], **({"v6": [0, 0]} if v6 else {})}
    for n in sizes:
        if connect:
            v4.send(b"q" * n)
        else:
            v4.sendto(b"q" * n, (host, port))
        done["v4"][0] += n
        done["v4"][1] += len(v4.recv(65535))
        if v6 is not None:
            v6.send(b"q" * n)
            done["v6"][0] += n
            done["v6"][1] += len(v6.recv(65535))
    print(json.dumps(done), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("response", type=int)
    s.add_argument("--reset", action="store_true")
    s.add_argument("--count", type=int, default=0)
    s.add_argument("--family", type=int, default=6)
    s.add_argument("--ready-file", default="")
    s.add_argument("--log-peers", action="store_true")
    d = sub.add_parser("dial")
    d.add_argument("host")
    d.add_argument("port", type=int)
    d.add_argument("request", type=int)
    d.add_argument("--count", type=int, default=1)
    d.add_argument("--parallel", type=int, default=1)
    d.add_argument("--hold", type=float, default=0.0)
    d.add_argument("--timeout", type=float, default=10.0)
    d.add_argument("--every", type=float, default=0.0, help="seconds between batches")
    d.add_argument("--payload", default="q", help="text repeated to fill each request")
    e = sub.add_parser("udp-echo")
    e.add_argument("port", type=int)
    e.add_argument("--count", type=int, default=0)
    e.add_argument("--family", choices=("4", "46"), default="4")
    e.add_argument("--ready-file", default="")
    c = sub.add_parser("udp-call")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("sizes", type=int, nargs="+")
    c.add_argument("--host6", default="")
    c.add_argument("--connect", action="store_true")
    a = p.parse_args()
    if a.cmd == "udp-echo":
        udp_echo(a.port, a.count, a.family, a.ready_file)
    elif a.cmd == "udp-call":
        udp_call(a.host, a.port, a.sizes, a.host6, a.connect)
    elif a.cmd == "serve":
        serve(a.port, a.response, a.reset, a.count, a.family, a.ready_file, a.log_peers)
    else:
        dial(a.host, a.port, a.request, a.count, a.parallel, a.hold, a.timeout, a.every,
             a.payload)


if __name__ == "__main__":
    main()
