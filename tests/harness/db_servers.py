"""Real PostgreSQL and Redis servers inside netns pods (Debian's postgresql and
redis-server), and what they say they served.

Each server also listens on a Unix socket in its own directory: the harness asks it
for its statistics there, so those questions are no TCP traffic of the pods'.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_TRAFFIC = str(Path(__file__).resolve().parent / "db_traffic.py")
_TEMPLATE = Path(tempfile.gettempdir()) / "traceprobe-pgdata-template"


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no {name} under /usr/lib/postgresql: install Debian's "
                           "postgresql (scripts/setup.sh does)")
    return found[-1]


def _wait_for(path: Path, proc: subprocess.Popen[Any], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen within {seconds:.0f} s")
        time.sleep(0.05)


def _as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


def _template() -> Path:
    """A data directory made once by initdb (trust auth), copied for each server."""
    if not (_TEMPLATE / "PG_VERSION").exists():
        shutil.rmtree(_TEMPLATE, ignore_errors=True)
        _TEMPLATE.mkdir(mode=0o700)
        shutil.chown(_TEMPLATE, "postgres", "postgres")
        subprocess.run(_as_postgres(_pg_bin("initdb"), "-D", str(_TEMPLATE), "--auth=trust",
                                    "-U", "postgres", "--no-sync", "-E", "UTF8"),
                       check=True, capture_output=True, timeout=120)
    return _TEMPLATE


@dataclass
class Server:
    proc: subprocess.Popen[Any]
    home: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def postgres(pod: Any, port: int, ssl: bool = False) -> Server:
    """A PostgreSQL server in `pod` on `port` (TLS offered when `ssl`), once it listens."""
    home = Path(tempfile.mkdtemp(prefix="traceprobe-pg-"))
    data = home / "data"
    shutil.copytree(_template(), data)
    with (data / "pg_hba.conf").open("a") as hba:  # the pods' addresses, no password
        hba.write("host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n")
    settings = ["-c", "listen_addresses=*", "-c", f"unix_socket_directories={home}",
                "-c", "fsync=off", "-c", f"ssl={'on' if ssl else 'off'}"]
    if ssl:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-subj", "/CN=postgres", "-keyout", str(data / "server.key"),
                        "-out", str(data / "server.crt")], check=True, capture_output=True)
        (data / "server.key").chmod(0o600)
    subprocess.run(["chown", "-R", "postgres:postgres", str(home)], check=True)
    proc = pod.popen(_as_postgres(_pg_bin("postgres"), "-D", str(data), "-p", str(port),
                                  *settings), stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    _wait_for(home / f".s.PGSQL.{port}", proc, "postgres")
    return Server(proc, home)


def redis(pod: Any, port: int) -> Server:
    """A Redis server in `pod` on `port`, nothing persisted, once it listens."""
    home = Path(tempfile.mkdtemp(prefix="traceprobe-redis-"))
    proc = pod.popen(["redis-server", "--port", str(port), "--bind", "0.0.0.0",
                      "--protected-mode", "no", "--save", "", "--appendonly", "no",
                      "--unixsocket", str(home / "redis.sock"), "--dir", str(home)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(home / "redis.sock", proc, "redis-server")
    return Server(proc, home)


def redis_commandstats(server: Server) -> Counter[str]:
    """Command -> calls, as the Redis server counted them (INFO commandstats)."""
    out = subprocess.run(["redis-cli", "-s", str(server.home / "redis.sock"), "INFO",
                          "commandstats"], check=True, capture_output=True, text=True).stdout
    calls: Counter[str] = Counter()
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line.partition(":")
            stats = dict(f.split("=") for f in fields.split(","))
            calls[name.removeprefix("cmdstat_").split("|")[0].upper()] += int(stats["calls"])
    return calls
