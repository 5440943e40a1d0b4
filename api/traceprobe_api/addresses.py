"""Host names, host:port and OTLP endpoint URLs, checked: what is wrong, in words (pure)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?"
                       r"(\.[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?)*\.?$")
#: Where credentials go instead of the URL.
HEADERS_ENV = "OTEL_EXPORTER_OTLP_HEADERS"


def host_problem(host: str) -> str | None:
    """Why `host` is neither a DNS name nor an IP address, or None."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        if _HOSTNAME.match(host) and not host.replace(".", "").isdigit():
            return None
    return f"{host!r} is not a host name or an IP address"


def host_port(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); ValueError says what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("not host:port (IPv6 as [address]:port)")
    if host.startswith("[") and host.endswith("]") and ":" in host:
        host = host[1:-1]
    elif ":" in host or "[" in host:
        raise ValueError("an IPv6 address goes in brackets: [address]:port")
    if problem := host_problem(host):
        raise ValueError(problem)
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"port {port!r} is not a number from 0 to 65535")
    return host, int(port)


def redact(url: str) -> str:
    """`url` with any user information (user, password, token) replaced by ***."""
    return re.sub(r"^((?:[A-Za-z][-+.\w]*://)?)[^/@]*@", r"\1***@", url)


def endpoint_problem(url: str, protocol: str) -> str | None:
    """What is wrong with an endpoint for `protocol`, or None."""
    if len(url) > 2048 or any(c.isspace() or not c.isprintable() for c in url):
        return "must be a URL of at most 2048 characters without spaces"
    if "://" not in url:
        if protocol != "grpc":
            return "http/protobuf needs an http:// or https:// URL"
        try:
            return "port 0 is not a port to export to" if host_port(url)[1] == 0 else None
        except ValueError as exc:
            return f"not a URL (http:// or https://) or host:port: {exc}"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if parts.scheme.lower() not in ("http", "https"):
        return "the scheme must be http:// (plaintext) or https:// (TLS)"
    if parts.username is not None or parts.password is not None:
        return f"credentials in the URL are not sent; put them in {HEADERS_ENV}"
    if problem := host_problem(parts.hostname or ""):
        return f"the host: {problem}"
    if port == 0:
        return "the port must be a number from 1 to 65535"
    if parts.fragment:
        return "a URL fragment (#...) means nothing to an exporter"
    if protocol == "grpc" and (parts.path not in ("", "/") or parts.query):
        return "a gRPC endpoint takes no path or query (gRPC sends to the host alone)"
    if protocol == "grpc" and port is None and parts.scheme.lower() == "http":
        return ("a plaintext gRPC endpoint needs its port: without one gRPC dials 443 "
                "(OTLP/gRPC listens on 4317)")
    return None
