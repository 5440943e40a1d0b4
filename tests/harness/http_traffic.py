"""Known HTTP/1.1 traffic, run inside netns pods: the truth for the request tests.

    http_traffic.py serve PORT [--marker TEXT] [--ready-file PATH]
    http_traffic.py call HOST PORT REQUEST... [--close] [--marker TEXT]
    http_traffic.py pipeline HOST PORT PATH...

`serve` (prints "ready" once listening, and creates --ready-file) answers, keep-alive:
    /size/N         200 with N body bytes (HEAD: the headers alone)
    /status/C       status C with a short body
    /chunked/N/K    200, N body bytes in K chunks (Transfer-Encoding: chunked)
    /sleep/MS       200 after MS milliseconds
    POST /echo      reads the body (Content-Length), answers its length
Bodies are made of --marker repeated when given (the no-payload tests look for it).
`call` sends each REQUEST (`METHOD:PATH[:BODY_BYTES]`) in turn on one keep-alive
connection (--close: a new connection for each), and prints one JSON line: per request
its method, status and the seconds from sending it to having the response's head.
`pipeline` writes every GET at once in one send, then reads the responses in order,
and prints their statuses. Plain stdlib Python: it runs under /usr/bin/python3.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARKER = b"b"


def _body(n: int) -> bytes:
    return (MARKER * (n // len(MARKER) + 1))[:n]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, head: bool = False) -> None:
        self.send_response(status)
        if status in (204, 304):  # no body, and no length: HTTP says so
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, head: bool = False) -> None:
        parts = self.path.strip("/").split("/")
        if parts[0] == "size":
            self._send(200, _body(int(parts[1])), head)
        elif parts[0] == "status":
            self._send(int(parts[1]), _body(10), head)
        elif parts[0] == "sleep":
            time.sleep(int(parts[1]) / 1000)
            self._send(200, _body(10), head)
        elif parts[0] == "chunked":
            size, chunks = int(parts[1]), int(parts[2])
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            body = _body(size)
            step = -(-size // chunks)
            for i in range(0, size, step):
                piece = body[i:i + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(404, _body(10), head)

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        got = 0
        while got < length:
            got += len(self.rfile.read(min(65536, length - got)))
        self._send(200, str(got).encode())

    def do_DELETE(self) -> None:
        self._route()


def serve(port: int, ready_file: str) -> None:
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    if ready_file:
        open(ready_file, "w").close()
    print("ready", flush=True)
    server.serve_forever()


def call(host: str, port: int, requests: list[str], close: bool) -> None:
    out = []
    conn = http.client.HTTPConnection(host, port)
    for spec in requests:
        method, path, *rest = spec.split(":")
        body = _body(int(rest[0])) if rest else None
        headers = {"Connection": "close"} if close else {}
        started = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        seconds = time.perf_counter() - started
        response.read()
        out.append({"method": method, "status": response.status, "seconds": seconds})
        if close:
            conn.close()
            conn = http.client.HTTPConnection(host, port)
    conn.close()
    print(json.dumps(out), flush=True)


def pipeline(host: str, port: int, paths: list[str]) -> None:
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % p.encode()
                              for p in paths))
        stream = sock.makefile("rb")
        statuses = []
        for _ in paths:
            statuses.append(int(stream.readline().split()[1]))
            length = 0
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            stream.read(length)
    print(json.dumps(statuses), flush=True)


def main() -> None:
    global MARKER
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("--ready-file", default="")
    c = sub.add_parser("call")
    c.add_argument("--close", action="store_true")
    pipe = sub.add_parser("pipeline")
    for client, many in ((c, "requests"), (pipe, "paths")):
        client.add_argument("host")
        client.add_argument("port", type=int)
        client.add_argument(many, nargs="+")
    for marked in (s, c):
        marked.add_argument("--marker", default="")
    args = parser.parse_args()
    if getattr(args, "marker", ""):
        MARKER = args.marker.encode()
    if args.mode == "serve":
        serve(args.port, args.ready_file)
    elif args.mode == "call":
        call(args.host, args.port, args.requests, args.close)
    else:
        pipeline(args.host, args.port, args.paths)


if __name__ == "__main__":
    main()
