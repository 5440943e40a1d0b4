"""The HTTP workload: Debian's nginx in the server namespace serving one small static
file, Debian's wrk in the client namespace keeping a few keep-alive connections busy
with GET requests for the run's seconds.

wrk's own report is the client's truth (requests answered, socket errors, its rate).
nginx's stub_status, read over a unix socket (so the status requests never touch the
traced TCP address), is the server's: connections accepted and requests answered,
which also counts the requests still in flight when wrk stopped, which wrk leaves out.
wrk opens one extra connection before the test (it checks each resolved address with a
connect and a close), so the client's connections are what nginx accepted, plus
whatever wrk could not connect.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import procs
from benchmarks.build import cache_dir
from benchmarks.netns import in_ns

if TYPE_CHECKING:
    from benchmarks.workloads import Settings, Workload, WorkloadResult

NGINX, WRK = "/usr/sbin/nginx", "/usr/bin/wrk"
PACKAGES = {NGINX: "nginx-light", WRK: "wrk"}
BODY_BYTES = 256  # the file served: the churn workload's response size
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DONE = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),")
_RATE = re.compile(r"^Requests/sec:\s*([\d.]+)", re.M)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass(frozen=True)
class WrkReport:
    requests: int          # responses completed within the duration
    seconds: float         # requests / Requests/sec: wrk's own elapsed time
    errors: dict[str, int] = field(default_factory=dict)  # socket errors, non-2xx/3xx

    @property
    def connect_errors(self) -> int:
        return self.errors.get("connect", 0)


def parse_wrk(text: str) -> WrkReport:
    """wrk's default report (its text, not a Lua script's)."""
    done = next((m for line in text.splitlines() if (m := _DONE.match(line))), None)
    if done is None:
        raise RuntimeError(f"wrk printed no result: {text.strip()[-300:]!r}")
    requests = int(done.group(1))
    rate = _RATE.search(text)
    # The rate line carries wrk's exact elapsed time; the summary line rounds it.
    seconds = (requests / float(rate.group(1)) if rate and float(rate.group(1)) > 0
               else float(done.group(2)) * _TIME_UNITS[done.group(3)])
    errors: dict[str, int] = {}
    if m := _SOCKET_ERRORS.search(text):
        errors = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"),
                                             m.groups(), strict=True) if int(v)}
    if (m := _NON_2XX.search(text)) and int(m.group(1)):
        errors["non-2xx/3xx"] = int(m.group(1))
    return WrkReport(requests, seconds, errors)


def parse_stub_status(text: str) -> tuple[int, int]:
    """(connections accepted, requests) from nginx's stub_status page."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.split() == ["server", "accepts", "handled", "requests"]:
            accepts, _, requests = (int(x) for x in lines[i + 1].split())
            return accepts, requests
    raise RuntimeError(f"no counters in nginx's stub_status: {text.strip()[-200:]!r}")


def nginx_config(where: Path, ip: str, port: int) -> str:
    """One worker per CPU (reuseport spreads wrk's connections over them), no access
    log, no default site, keep-alive for the whole run: wrk never has to reconnect."""
    return f"""daemon off;
master_process on;
worker_processes auto;
pid {where}/nginx.pid;
error_log stderr crit;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    log_not_found off;
    server_tokens off;
    default_type text/plain;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    client_body_temp_path {where}/body;
    proxy_temp_path {where}/proxy;
    fastcgi_temp_path {where}/fastcgi;
    uwsgi_temp_path {where}/uwsgi;
    scgi_temp_path {where}/scgi;
    server {{
        listen {ip}:{port} backlog=4096 reuseport;
        root {where}/www;
    }}
    server {{
        listen unix:{where}/status.sock;
        location / {{ stub_status; }}
    }}
}}
"""


def workdir(pid: int | None = None) -> Path:
    return cache_dir() / f"nginx-{pid or os.getpid()}"


def missing() -> list[str]:
    """The Debian packages of nginx and wrk not installed."""
    return [pkg for path, pkg in PACKAGES.items() if not os.access(path, os.X_OK)]


def ensure_tools(install: bool) -> str | None:
    """None when nginx and wrk can run, else why not (the workload's rows show n/a)."""
    if not (absent := missing()):
        return None
    if not install:
        return f"{', '.join(absent)} not installed and --no-install given"
    for pkg in absent:
        if why := procs.apt_install(pkg):
            return f"{pkg} not installed: {why}"
    return f"installed but still missing: {', '.join(absent)}" if missing() else None


def reap_stale() -> list[str]:
    """Remove the nginx directories of benchmark runs that no longer exist (their
    nginx processes die with those runs' namespaces: netns.reap_stale)."""
    removed = []
    for path in cache_dir().glob("nginx-*"):
        pid = path.name.removeprefix("nginx-")
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def _status(sock: Path, timeout: float = 5.0) -> tuple[int, int]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return parse_stub_status(data.decode(errors="replace"))


def _wait_status(server: subprocess.Popen[bytes], where: Path,
                 timeout: float) -> tuple[int, int]:
    """The first status answer: nginx's workers are up and serving."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _status(where / "status.sock")
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                err = (where / "error.log").read_text(errors="replace")
                raise RuntimeError(f"nginx did not start: {err.strip()[-300:]}") from None
            time.sleep(0.05)


def run(workload: Workload, settings: Settings) -> WorkloadResult:
    """nginx started, wrk for the run's seconds (whole seconds: wrk takes no fraction),
    nginx stopped gracefully (SIGQUIT) and its directory removed."""
    from benchmarks.workloads import WorkloadResult  # a cycle: workloads dispatches here

    where, w = workdir(), workload.where
    shutil.rmtree(where, ignore_errors=True)
    (where / "www").mkdir(parents=True)
    (where / "www" / "index.html").write_bytes(b"x" * (BODY_BYTES - 1) + b"\n")
    conf = where / "nginx.conf"
    conf.write_text(nginx_config(where, w.server_ip, workload.port))
    # A file, not a pipe: nothing reads a pipe while wrk runs, and a full one would stall
    # nginx.
    with (where / "error.log").open("wb") as log:
        server = procs.spawn(in_ns(w.server_ns, [NGINX, "-p", str(where), "-c", str(conf),
                                                 "-e", "stderr"]),
                             stdout=subprocess.DEVNULL, stderr=log)
    workers: list[int] = []
    try:
        before = _wait_status(server, where, 10.0)
        workers = procs.children(server.pid)
        seconds = max(1, round(settings.seconds))
        client = procs.spawn(in_ns(w.client_ns, [
            WRK, "-t", str(settings.http_threads), "-c", str(settings.http_connections),
            "-d", f"{seconds}s", "--timeout", "10s",
            f"http://{w.server_ip}:{workload.port}/index.html"]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        code, client_cpu = procs.wait_rusage(client, seconds + 60)
        out = client.stdout.read() if client.stdout else ""
        if code != 0:
            raise RuntimeError(f"wrk exited with {code}: {out.strip()[-300:]}")
        report = parse_wrk(out)
        # Again: a worker may still have been forking when the first status came.
        workers = sorted({*workers, *procs.children(server.pid)})
        after = _status(where / "status.sock")
        server_cpu = sum(procs.cpu_seconds(p) for p in [server.pid, *workers]
                         if Path(f"/proc/{p}").exists())
    finally:
        procs.stop(server, signal.SIGQUIT, timeout=10)
        procs.kill_leftovers(workers, "nginx")
        shutil.rmtree(where, ignore_errors=True)
    # Both status answers count their own connection and request; the later one's
    # is not wrk's.
    accepted, served = after[0] - before[0] - 1, after[1] - before[1] - 1
    return WorkloadResult(
        workload=workload, seconds=report.seconds, completed=report.requests,
        failed=sum(report.errors.values()), bytes_sent=0, server_accepted=accepted,
        server_bytes_received=0, client_pid=client.pid, server_pid=server.pid,
        client_cpu=client_cpu, server_cpu=server_cpu, errors=dict(report.errors),
        connections=accepted + report.connect_errors, served=served,
        server_workers=tuple(workers))
