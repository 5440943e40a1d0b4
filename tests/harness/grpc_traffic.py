"""Known gRPC traffic from grpcio (C-core's HTTP/2 and HPACK), run inside netns pods: the
truth for the gRPC request tests.

    grpc_traffic.py serve PORT [--ready-file PATH]
    grpc_traffic.py call HOST PORT CALL... [--concurrent]

`serve` (prints "ready" once listening, and creates --ready-file) answers unary calls
to /traceprobe.Probe/Call: a request `status:N` ends with status code N (0 is OK, with
a reply), `sleep:MS` answers OK after MS milliseconds, `echo:TEXT` answers OK with
TEXT. `call` makes each CALL on one
channel (one HTTP/2 connection), in turn, or with --concurrent all at once (streams
multiplexed on the connection), and
prints one JSON line: per call its status code and the seconds it took. No protobuf:
the messages are raw bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent import futures
from typing import Any

import grpc

METHOD = "/traceprobe.Probe/Call"


def _answer(request: bytes, context: grpc.ServicerContext) -> bytes:
    what, _, arg = request.decode().partition(":")
    if what == "sleep":
        time.sleep(int(arg) / 1000)
    elif what == "echo":
        return arg.encode()
    elif what == "status" and int(arg):
        context.abort(grpc.StatusCode(_CODES[int(arg)]), "as asked")
    return b"ok:" + request


_CODES = {code.value[0]: code.value for code in grpc.StatusCode}


def serve(port: int, ready_file: str | None) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handler = grpc.method_handlers_generic_handler(
        "traceprobe.Probe", {"Call": grpc.unary_unary_rpc_method_handler(_answer)})
    server.add_generic_rpc_handlers([handler])
    server.add_insecure_port(f"[::]:{port}")
    server.start()
    if ready_file:
        open(ready_file, "w").close()
    print("ready", flush=True)
    server.wait_for_termination()


def _one(call: Any, request: str) -> dict[str, Any]:
    started = time.monotonic()
    code = 0
    try:
        call(request.encode(), timeout=30)
    except grpc.RpcError as e:
        code = e.code().value[0]
    return {"status": code, "seconds": time.monotonic() - started}


def call(host: str, port: int, requests: list[str], concurrent: bool) -> None:
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = channel.unary_unary(METHOD)
        if concurrent:
            with futures.ThreadPoolExecutor(max_workers=len(requests)) as pool:
                out = list(pool.map(lambda r: _one(stub, r), requests))
        else:
            out = [_one(stub, r) for r in requests]
    json.dump(out, sys.stdout)
    print()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("--ready-file")
    c = sub.add_parser("call")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("requests", nargs="+")
    c.add_argument("--concurrent", action="store_true")
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args.port, args.ready_file)
    else:
        call(args.host, args.port, args.requests, args.concurrent)


if __name__ == "__main__":
    main()
