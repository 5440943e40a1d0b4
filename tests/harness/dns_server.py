"""A tiny authoritative DNS server and resolver, run inside netns pods (test truth).

    dns_server.py serve PORT NAME=IP [NAME=IP ...]   prints "ready", answers A/AAAA
    dns_server.py resolve SERVER NAME [--type A|AAAA]  prints {"addresses": [...]}
    dns_server.py resolve-tcp SERVER NAME:TYPE... [--pipeline]
                                                     prints [{"type", "rcode"}, ...]

`serve` answers over UDP and over TCP (RFC 7766: each message after its 2-byte
length, many on one connection). `resolve-tcp` asks each question in turn on one TCP
connection, or with --pipeline writes them all before reading any answer.
Written from RFC 1035 with the stdlib only (it runs under /usr/bin/python3), and on
purpose independent of the agent's parser: the test compares the two. `serve`
answers each name with its address through a CNAME (`NAME` → `edge.NAME`), the
answer names compressed, so the agent meets what real resolvers send.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import struct
import threading

TYPES = {"A": 1, "AAAA": 28}
CNAME, IN = 5, 1


def _name(text: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in text.split(".") if p) + b"\0"


def _read_name(msg: bytes, at: int) -> tuple[str, int]:
    labels: list[str] = []
    while msg[at]:
        labels.append(msg[at + 1:at + 1 + msg[at]].decode())
        at += 1 + msg[at]
    return ".".join(labels), at + 1


def answer(query: bytes, table: dict[str, str]) -> bytes:
    ident = struct.unpack("!H", query[:2])[0]
    name, end = _read_name(query, 12)
    qtype = struct.unpack("!H", query[end:end + 2])[0]
    question = query[12:end + 4]
    address = table.get(name.lower())
    version = 4 if qtype == TYPES["A"] else 6
    if address is None or ipaddress.ip_address(address).version != version:
        return struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
    # CNAME NAME -> edge.NAME, then the address for edge.NAME ("edge" + pointer to NAME).
    target = b"\x04edge\xc0\x0c"
    cname = b"\xc0\x0c" + struct.pack("!HHIH", CNAME, IN, 30, len(target)) + target
    rdata = ipaddress.ip_address(address).packed
    cname_at = 12 + len(question) + 12  # where the CNAME's rdata starts
    record = struct.pack("!H", 0xC000 | cname_at) + struct.pack(
        "!HHIH", qtype, IN, 45, len(rdata)) + rdata
    return struct.pack("!HHHHHH", ident, 0x8180, 1, 2, 0, 0) + question + cname + record


def _read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _tcp_client(conn: socket.socket, table: dict[str, str]) -> None:
    with conn:
        try:
            while True:
                (size,) = struct.unpack("!H", _read_exactly(conn, 2))
                reply = answer(_read_exactly(conn, size), table)
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except (EOFError, OSError):
            pass


def _serve_tcp(listener: socket.socket, table: dict[str, str]) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_tcp_client, args=(conn, table), daemon=True).start()


def serve(port: int, table: dict[str, str]) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::", port))
    listener.listen(16)
    threading.Thread(target=_serve_tcp, args=(listener, table), daemon=True).start()
    print("ready", flush=True)
    while True:
        query, peer = sock.recvfrom(512)
        sock.sendto(answer(query, table), peer)


def resolve(server: str, name: str, qtype: str) -> None:
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(5)
    ident = random.randrange(1 << 16)
    sock.sendto(struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _name(name)
                + struct.pack("!HH", TYPES[qtype], IN), (server, 53))
    msg = sock.recv(512)
    count = struct.unpack("!H", msg[6:8])[0]
    at = _read_name(msg, 12)[1] + 4
    addresses = []
    for _ in range(count):  # answer names here are pointers (2 bytes)
        rtype, _cls, _ttl, size = struct.unpack("!HHIH", msg[at + 2:at + 12])
        if rtype == TYPES[qtype]:
            addresses.append(str(ipaddress.ip_address(msg[at + 12:at + 12 + size])))
        at += 12 + size
    print(json.dumps({"addresses": addresses}), flush=True)


def resolve_tcp(server: str, questions: list[str], pipeline: bool) -> None:
    queries = []
    for question in questions:
        name, qtype = question.rsplit(":", 1)
        query = struct.pack("!HHHHHH", random.randrange(1 << 16), 0x0100, 1, 0, 0, 0) \
            + _name(name) + struct.pack("!HH", TYPES[qtype], IN)
        queries.append((qtype, struct.pack("!H", len(query)) + query))
    out = []
    with socket.create_connection((server, 53), timeout=5) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if pipeline:
            conn.sendall(b"".join(q for _, q in queries))
        for qtype, query in queries:
            if not pipeline:
                conn.sendall(query)
            (size,) = struct.unpack("!H", _read_exactly(conn, 2))
            reply = _read_exactly(conn, size)
            out.append({"type": qtype, "rcode": reply[3] & 0xF})
    print(json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("names", nargs="+", help="NAME=IP")
    r = sub.add_parser("resolve")
    r.add_argument("server")
    r.add_argument("name")
    r.add_argument("--type", default="A", choices=sorted(TYPES))
    rt = sub.add_parser("resolve-tcp")
    rt.add_argument("server")
    rt.add_argument("questions", nargs="+", help="NAME:TYPE")
    rt.add_argument("--pipeline", action="store_true")
    a = p.parse_args()
    if a.cmd == "serve":
        serve(a.port, dict(n.lower().split("=", 1) for n in a.names))
    elif a.cmd == "resolve-tcp":
        resolve_tcp(a.server, a.questions, a.pipeline)
    else:
        resolve(a.server, a.name, a.type)


if __name__ == "__main__":
    main()
