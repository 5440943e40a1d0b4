"""Known PostgreSQL and Redis traffic from their usual client libraries, run inside netns
pods: the truth for the database request tests.

    db_traffic.py pg HOST PORT STATEMENT... [--pipeline] [--sslmode MODE]
    db_traffic.py redis HOST PORT COMMAND... [--pipeline]

`pg` runs each STATEMENT with psycopg 3 (the extended protocol: Parse, Bind, Execute,
Sync) in autocommit on one connection; --pipeline sends them all in psycopg's pipeline
mode, a Sync after each, before reading any result. `redis` runs each COMMAND (words
split on spaces) with redis-py on one connection (RESP2, no client-info commands on
connect); --pipeline sends them all in one write. Both print one JSON line: per request
its operation (the statement's first keyword, or the command), its outcome (a SQLSTATE,
"00000" on success; for Redis "OK" or "ERROR") and the seconds it took as the client
saw it. They run under the test's own Python, which has both libraries.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _pg(args: argparse.Namespace) -> list[dict[str, Any]]:
    import psycopg

    out: list[dict[str, Any]] = []
    dsn = f"host={args.host} port={args.port} user=postgres dbname=postgres sslmode={args.sslmode}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        if args.pipeline:
            started = time.monotonic()
            with conn.pipeline() as pipe:
                cursors = []
                for statement in args.requests:
                    cursors.append(conn.execute(statement))
                    pipe.sync()
            for statement in args.requests:
                out.append({"operation": statement.split()[0].upper(), "outcome": "00000",
                            "seconds": time.monotonic() - started})
            return out
        for statement in args.requests:
            started = time.monotonic()
            outcome = "00000"
            try:
                cur = conn.execute(statement)
                if cur.description is not None:
                    cur.fetchall()
            except psycopg.Error as e:
                outcome = e.sqlstate or "?"
            out.append({"operation": statement.split()[0].upper(), "outcome": outcome,
                        "seconds": time.monotonic() - started})
    return out


def _redis(args: argparse.Namespace) -> list[dict[str, Any]]:
    import redis

    client = redis.Redis(host=args.host, port=args.port, protocol=2, lib_name=None,
                         lib_version=None)
    commands = [c.split() for c in args.requests]
    out: list[dict[str, Any]] = []
    if args.pipeline:
        pipe = client.pipeline(transaction=False)
        for words in commands:
            pipe.execute_command(*words)  # type: ignore[no-untyped-call]
        started = time.monotonic()
        replies = pipe.execute(raise_on_error=False)
        for words, reply in zip(commands, replies, strict=True):
            out.append({"operation": words[0].upper(),
                        "outcome": "ERROR" if isinstance(reply, redis.ResponseError) else "OK",
                        "seconds": time.monotonic() - started})
        return out
    for words in commands:
        started = time.monotonic()
        outcome = "OK"
        try:
            client.execute_command(*words)  # type: ignore[no-untyped-call]
        except redis.ResponseError:
            outcome = "ERROR"
        out.append({"operation": words[0].upper(), "outcome": outcome,
                    "seconds": time.monotonic() - started})
    client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=("pg", "redis"))
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("requests", nargs="+")
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("--sslmode", default="disable")
    args = parser.parse_args()
    result = _pg(args) if args.system == "pg" else _redis(args)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
