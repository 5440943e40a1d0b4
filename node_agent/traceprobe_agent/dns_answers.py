"""Which addresses a DNS response answered for which name, and for how long (pure).

Connections to IPs outside the cluster have no pod or Service to name them by;
the name the application looked up is the next best thing. The agent hands us
the UDP payload of DNS responses (RFC 1035 wire format, possibly cut to its
first 512 bytes by the capture) and asks later which name an address came from.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

_HEADER = struct.Struct(">HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
_RR = struct.Struct(">HHIH")  # type, class, ttl, rdlength (after the owner name)
_QR = 0x8000
_RCODE = 0x000F
_A, _AAAA, _IN = 1, 28, 1
_MAX_NAME = 255  # octets on the wire, length octets and the root's zero included
# Enough for any honest message; a pointer loop that adds no labels never ends otherwise.
_MAX_JUMPS = 64


@dataclass(frozen=True)
class DnsAnswer:
    name: str  # the question name: lower-case, no trailing dot
    address: str  # ipaddress text: dotted IPv4 or compressed IPv6
    ttl: int  # seconds, as in the answer record


def _read_name(message: bytes, pos: int) -> tuple[str, int] | None:
    """The name at pos and the offset just past it in the record, or None if unreadable."""
    labels: list[str] = []
    wire_length = 1
    after = -1  # past the first pointer: where the record continues
    jumps = 0
    while pos < len(message):
        length = message[pos]
        if length == 0:
            return ".".join(labels), after if after >= 0 else pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(message) or jumps == _MAX_JUMPS:
                return None
            if after < 0:
                after = pos + 2
            pos = (length & 0x3F) << 8 | message[pos + 1]
            jumps += 1
            continue
        if length & 0xC0:  # 0x40/0x80: label types retired by RFC 6891
            return None
        wire_length += 1 + length
        if wire_length > _MAX_NAME or pos + 1 + length > len(message):
            return None
        # Names are ASCII in practice; a stray byte must not cost the whole response.
        labels.append(message[pos + 1:pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    return None


def parse_answers(message: bytes) -> list[DnsAnswer]:
    """A/AAAA answers of a DNS response, each named by the question.

    Never raises: anything malformed, a query (QR=0), a non-zero RCODE, or a
    question count other than 1 gives []; answers cut off by truncation are
    skipped, the complete ones before them are kept.
    """
    if len(message) < _HEADER.size:
        return []
    _id, flags, qdcount, ancount, _ns, _ar = _HEADER.unpack_from(message)
    # With several questions we could not tell which one an address answers.
    if not flags & _QR or flags & _RCODE or qdcount != 1:
        return []
    question = _read_name(message, _HEADER.size)
    if question is None or not question[0] or question[1] + 4 > len(message):
        return []  # the root (empty name) has no addresses worth naming
    name, pos = question[0].lower(), question[1] + 4
    answers: list[DnsAnswer] = []
    for _ in range(ancount):
        owner = _read_name(message, pos)
        if owner is None or owner[1] + _RR.size > len(message):
            break  # cut off (or garbled) from here on: keep what came before
        rtype, rclass, ttl, rdlength = _RR.unpack_from(message, owner[1])
        start = owner[1] + _RR.size
        pos = start + rdlength
        if pos > len(message):
            break
        # CNAMEs are skipped: the application asked for the question name, and
        # every address at the end of the chain answers it.
        if rclass != _IN:
            continue
        if rtype == _A and rdlength == 4:
            answers.append(DnsAnswer(name, str(IPv4Address(message[start:pos])), ttl))
        elif rtype == _AAAA and rdlength == 16:
            answers.append(DnsAnswer(name, str(IPv6Address(message[start:pos])), ttl))
    return answers


class DnsNames:
    """Which name an address was last answered for, until its TTL runs out or, while
    it is asked for, at least `min_ttl` after its last use (bounded)."""

    def __init__(self, max_entries: int = 10_000, min_ttl: float = 60.0,
                 max_ttl: float = 3600.0) -> None:
        self._max_entries = max_entries
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._entries: dict[str, tuple[str, float]] = {}  # address → (name, expires at)

    def learn(self, answers: Iterable[DnsAnswer], now: float) -> None:
        for answer in answers:
            # A floor, because a connection may start after a short TTL ran out;
            # a ceiling, because addresses get reused for other names.
            ttl = min(max(float(answer.ttl), self._min_ttl), self._max_ttl)
            # Re-inserting moves the address to the end, so eviction spares it longest.
            self._entries.pop(answer.address, None)
            self._entries[answer.address] = (answer.name, now + ttl)
            while len(self._entries) > self._max_entries:
                del self._entries[next(iter(self._entries))]

    def name_of(self, address: str, now: float) -> str | None:
        entry = self._entries.get(address)
        if entry is None:
            return None
        name, expires = entry
        if now >= expires:
            del self._entries[address]
            return None
        if now + self._min_ttl > expires:
            # In use: a long-lived connection keeps its name past a short TTL.
            self._entries[address] = (name, now + self._min_ttl)
        return name

    def __len__(self) -> int:
        return len(self._entries)
