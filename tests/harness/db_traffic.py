"""Known PostgreSQL and Redis traffic from their usual client libraries, run inside netns
pods: the truth for the database request tests.

    db_traffic.py pg HOST PORT STATEMENT... [--pipeline] [--sslmode MODE]
    db_traffic.py redis HOST PORT COMMAND... [--pipeline]
    db_traffic.py pg-serve PORT --ready-file PATH
    db_traffic.py redis-serve PORT --ready-file PATH

`pg` runs each STATEMENT in autocommit on one connection with psycopg 3 (the extended
protocol: Parse, Bind, Execute, Sync), or where only psycopg2 is installed (Debian's,
on the real node's pods) with it (the simple protocol: one Query each); --pipeline
(psycopg 3) sends them all in its pipeline mode, a Sync after each, before reading any
result. `redis` runs each COMMAND (words split on spaces) with redis-py on one
connection (RESP2, no client-info commands on connect); --pipeline sends them all in
one write. Both print one JSON line: per request its operation (the statement's first
keyword, or the command), its outcome (a SQLSTATE, "00000" on success; for Redis "OK"
or "ERROR") and the seconds it took as the client saw it.

`pg-serve` and `redis-serve` run Debian's postgres (a fresh data directory, trust
authentication from anywhere, no TLS) or redis-server (nothing persisted) on PORT, and
create the ready file once it listens: the real node's pods serve with them.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _timed(statement: str, run: Any, error: type[Exception], code: str,
           started: float | None = None) -> dict[str, Any]:
    """`statement` run by `run` (which returns its cursor), its rows read: its operation,
    its outcome (the error's SQLSTATE, from its attribute `code`) and its seconds."""
    started = time.monotonic() if started is None else started
    outcome = "00000"
    try:
        cur = run(statement)
        if cur.description is not None:
            cur.fetchall()
    except error as e:
        outcome = getattr(e, code) or "?"
    return {"operation": statement.split()[0].upper(), "outcome": outcome,
            "seconds": time.monotonic() - started}


def _pg2(args: argparse.Namespace) -> list[dict[str, Any]]:
    import psycopg2  # type: ignore[import-untyped,import-not-found,unused-ignore]

    conn = psycopg2.connect(host=args.host, port=args.port, user="postgres",
                            dbname="postgres", sslmode=args.sslmode)
    conn.autocommit = True
    with conn.cursor() as cur:
        def run(statement: str) -> Any:
            cur.execute(statement)
            return cur

        out = [_timed(statement, run, psycopg2.Error, "pgcode") for statement in args.requests]
    conn.close()
    return out


def _pg(args: argparse.Namespace) -> list[dict[str, Any]]:
    try:
        import psycopg
    except ImportError:
        if args.pipeline:
            raise SystemExit("--pipeline needs psycopg 3") from None
        return _pg2(args)

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
            # Each result read after the pipeline: an error in one raises here.
            for statement, cur in zip(args.requests, cursors, strict=True):
                out.append(_timed(statement, lambda _, c=cur: c, psycopg.Error, "sqlstate",
                                  started))
            return out
        out = [_timed(statement, conn.execute, psycopg.Error, "sqlstate")
               for statement in args.requests]
    return out


def _redis(args: argparse.Namespace) -> list[dict[str, Any]]:
    import redis

    try:
        client = redis.Redis(host=args.host, port=args.port, protocol=2, lib_name=None,
                             lib_version=None)
    except TypeError:  # redis-py 4 (Debian's) has neither: RESP2, nothing sent on connect
        client = redis.Redis(host=args.host, port=args.port)
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


def _listening(proc: subprocess.Popen[bytes], socket: Path, ready: str) -> None:
    while not socket.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the server exited {proc.returncode} before listening")
        time.sleep(0.05)
    Path(ready).touch()
    raise SystemExit(proc.wait())


def _pg_serve(port: int, ready: str) -> None:
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    home = Path(tempfile.mkdtemp(prefix="pg-"))
    shutil.chown(home, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    data = home / "data"
    subprocess.run([*as_postgres, f"{bindir}/initdb", "-D", str(data), "--auth=trust",
                    "-U", "postgres", "--no-sync", "-E", "UTF8"], check=True,
                   stdout=subprocess.DEVNULL)
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n")
    proc = subprocess.Popen([*as_postgres, f"{bindir}/postgres", "-D", str(data), "-p",
                             str(port), "-c", "listen_addresses=*", "-c",
                             f"unix_socket_directories={home}", "-c", "fsync=off",
                             "-c", "ssl=off"])
    _listening(proc, home / f".s.PGSQL.{port}", ready)


def _redis_serve(port: int, ready: str) -> None:
    home = Path(tempfile.mkdtemp(prefix="redis-"))
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "0.0.0.0",
                             "--protected-mode", "no", "--save", "", "--appendonly", "no",
                             "--unixsocket", str(home / "redis.sock"), "--dir", str(home)])
    _listening(proc, home / "redis.sock", ready)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=("pg", "redis", "pg-serve", "redis-serve"))
    parser.add_argument("host", help="the server (PORT for the -serve commands)")
    parser.add_argument("port", type=int, nargs="?")
    parser.add_argument("requests", nargs="*")
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("--sslmode", default="disable")
    parser.add_argument("--ready-file")
    args = parser.parse_args()
    if args.system.endswith("-serve"):
        if not args.ready_file:
            parser.error(f"{args.system} needs --ready-file")
        serve = _pg_serve if args.system == "pg-serve" else _redis_serve
        serve(int(args.host), args.ready_file)
    if args.port is None or not args.requests:
        parser.error(f"{args.system} needs HOST PORT and at least one request")
    result = _pg(args) if args.system == "pg" else _redis(args)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
