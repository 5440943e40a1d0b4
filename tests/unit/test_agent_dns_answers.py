from __future__ import annotations

import struct
from ipaddress import ip_address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traceprobe_agent.dns_answers import DnsAnswer, DnsNames, parse_answers

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
A, AAAA, CNAME, TXT = 1, 28, 5, 16
RESPONSE, QUERY = 0x8180, 0x0100  # standard response / query, RD (+RA), NOERROR
TO_QUESTION = b"\xc0\x0c"  # a pointer to the question name, right after the header


def name(text: str) -> bytes:
    labels = [label.encode() for label in text.rstrip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def pointer(offset: int) -> bytes:
    return struct.pack(">H", 0xC000 | offset)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 300, rclass: int = 1) -> bytes:
    return owner + struct.pack(">HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def message(question: bytes, records: list[bytes], flags: int = RESPONSE,
            qdcount: int = 1, ancount: int | None = None) -> bytes:
    count = len(records) if ancount is None else ancount
    header = struct.pack(">HHHHHH", 0x1234, flags, qdcount, count, 0, 0)
    return header + question + b"".join(records)


def question(text: str, qtype: int = A) -> bytes:
    return name(text) + struct.pack(">HH", qtype, 1)


def packed(text: str) -> bytes:
    return ip_address(text).packed


def basic() -> bytes:
    return message(question("API.Example.COM."), [
        rr(TO_QUESTION, A, packed("93.184.216.34"), ttl=30),
        rr(TO_QUESTION, AAAA, packed("2001:db8:0:0:0:0:0:1"), ttl=0xFFFFFFFF),
        rr(TO_QUESTION, A, packed("93.184.216.35"), ttl=0)])


def test_a_and_aaaa_answers_named_by_the_question() -> None:
    assert parse_answers(basic()) == [
        DnsAnswer("api.example.com", "93.184.216.34", 30),
        DnsAnswer("api.example.com", "2001:db8::1", 4294967295),
        DnsAnswer("api.example.com", "93.184.216.35", 0)]


def test_cname_chain_then_addresses() -> None:
    q = question("www.shop.io")
    first_target = 12 + len(q) + 12  # the CNAME's rdata: owner pointer (2) + fixed part (10)
    chain = [rr(TO_QUESTION, CNAME, name("shop.cdn.net")),
             rr(pointer(first_target), CNAME, b"\x04edge" + pointer(first_target)),
             rr(b"\x04edge" + pointer(first_target), A, packed("10.9.8.7"), ttl=60),
             rr(b"\x04edge" + pointer(first_target), A, packed("10.9.8.6"), ttl=60)]
    assert parse_answers(message(q, chain)) == [
        DnsAnswer("www.shop.io", "10.9.8.7", 60), DnsAnswer("www.shop.io", "10.9.8.6", 60)]


def test_answer_names_plain_compressed_and_mixed() -> None:
    records = [rr(name("db.internal"), A, packed("10.0.0.1")),
               rr(TO_QUESTION, A, packed("10.0.0.2")),
               rr(b"\x03www" + TO_QUESTION, A, packed("10.0.0.3"))]
    assert [a.address for a in parse_answers(message(question("db.internal"), records))] == [
        "10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_other_records_are_skipped_not_fatal() -> None:
    records = [rr(TO_QUESTION, A, b"\x0a\x00\x00\x01\x00"),  # A with a 5-byte address
               rr(TO_QUESTION, AAAA, packed("10.0.0.2")),  # AAAA with 4 bytes
               rr(TO_QUESTION, A, packed("10.0.0.3"), rclass=3),  # class CH
               rr(TO_QUESTION, TXT, b"\x05hello"),
               rr(TO_QUESTION, A, packed("10.0.0.4"), ttl=7)]
    assert parse_answers(message(question("x.io"), records)) == [
        DnsAnswer("x.io", "10.0.0.4", 7)]


def test_pointer_loops_end_without_hanging() -> None:
    good = rr(TO_QUESTION, A, packed("10.0.0.1"))
    q = question("loop.io")
    at = 12 + len(q) + len(good)  # where the looping record starts
    self_loop = rr(pointer(at), A, packed("10.0.0.2"))
    two_step = rr(pointer(at + 2) + pointer(at), A, packed("10.0.0.2"))
    with_labels = rr(b"\x01a" + pointer(at), A, packed("10.0.0.2"))
    for looping in (self_loop, two_step, with_labels):
        assert parse_answers(message(q, [good, looping, good])) == [
            DnsAnswer("loop.io", "10.0.0.1", 300)]
    assert parse_answers(message(pointer(12) + b"\x00\x01\x00\x01", [good])) == []


def test_name_length_limit() -> None:
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])  # 255 octets on the wire
    assert len(name(longest)) == 255
    assert parse_answers(message(question(longest), [rr(TO_QUESTION, A, packed("1.2.3.4"))])) == [
        DnsAnswer(longest, "1.2.3.4", 300)]
    too_long = longest + "c"
    assert parse_answers(message(question(too_long), [rr(TO_QUESTION, A, packed("1.2.3.4"))])) == []


def test_odd_names() -> None:
    odd = b"\x04caf\xe9\x02io\x00" + struct.pack(">HH", A, 1)
    assert parse_answers(message(odd, [rr(TO_QUESTION, A, packed("1.2.3.4"))])) == [
        DnsAnswer("caf\ufffd.io", "1.2.3.4", 300)]
    root = b"\x00" + struct.pack(">HH", A, 1)
    assert parse_answers(message(root, [rr(b"\x00", A, packed("1.2.3.4"))])) == []
    extended = b"\x41abc\x00" + struct.pack(">HH", A, 1)  # label type 0x40
    assert parse_answers(message(extended, [rr(TO_QUESTION, A, packed("1.2.3.4"))])) == []


def test_truncated_at_every_offset_keeps_complete_answers() -> None:
    q = question("cdn.example.org")
    records = [rr(TO_QUESTION, CNAME, name("edge.example.net")),
               rr(TO_QUESTION, A, packed("198.51.100.1")),
               rr(name("edge.example.net"), AAAA, packed("2001:db8::2")),
               rr(TO_QUESTION, A, packed("198.51.100.3"))]
    full = message(q, records)
    expected = parse_answers(full)
    assert [a.address for a in expected] == ["198.51.100.1", "2001:db8::2", "198.51.100.3"]
    ends = []  # where each address record ends
    offset = 12 + len(q)
    for record in records:
        offset += len(record)
        ends.append(offset)
    address_ends = ends[1:]
    for cut in range(len(full) + 1):
        complete = sum(1 for end in address_ends if end <= cut)
        assert parse_answers(full[:cut]) == expected[:complete], cut


def test_more_answers_announced_than_present() -> None:
    short = message(question("a.io"), [rr(TO_QUESTION, A, packed("1.1.1.1"))], ancount=5)
    assert parse_answers(short) == [DnsAnswer("a.io", "1.1.1.1", 300)]


def test_not_a_usable_response() -> None:
    answer = [rr(TO_QUESTION, A, packed("1.2.3.4"))]
    assert parse_answers(message(question("a.io"), answer)) != []  # the control
    assert parse_answers(message(question("a.io"), answer, flags=QUERY)) == []
    assert parse_answers(message(question("a.io"), answer, flags=RESPONSE | 3)) == []  # NXDOMAIN
    assert parse_answers(message(question("a.io"), answer, flags=RESPONSE | 2)) == []  # SERVFAIL
    two = question("a.io") + question("b.io")
    assert parse_answers(message(two, answer, qdcount=2)) == []
    assert parse_answers(message(b"", [rr(name("a.io"), A, packed("1.2.3.4"))], qdcount=0)) == []
    assert parse_answers(b"") == [] and parse_answers(basic()[:11]) == []


def test_names_ttl_clamped_up_and_down() -> None:
    def learned() -> DnsNames:  # fresh each time: asking for a name extends its life
        names = DnsNames(min_ttl=60.0, max_ttl=3600.0)
        names.learn([DnsAnswer("short.io", "1.1.1.1", 5),
                     DnsAnswer("long.io", "2.2.2.2", 86400),
                     DnsAnswer("mid.io", "3.3.3.3", 300)], now=1000.0)
        return names

    for address, name, expires in (("1.1.1.1", "short.io", 1060.0),
                                   ("3.3.3.3", "mid.io", 1300.0),
                                   ("2.2.2.2", "long.io", 4600.0)):
        assert learned().name_of(address, expires - 0.1) == name
        names = learned()
        assert names.name_of(address, expires) is None and len(names) == 2


def test_names_expiry_and_unknown() -> None:
    names = DnsNames()
    assert names.name_of("9.9.9.9", 0.0) is None
    names.learn([DnsAnswer("a.io", "9.9.9.9", 120)], now=0.0)
    assert len(names) == 1 and names.name_of("9.9.9.9", 30.0) == "a.io"
    assert names.name_of("9.9.9.9", 121.0) is None and len(names) == 0


def test_names_in_use_outlive_their_ttl() -> None:
    """A long-lived connection is named at every interval: its name stays while asked
    for, min_ttl past the last use, and goes once nobody asks."""
    names = DnsNames(min_ttl=60.0)
    names.learn([DnsAnswer("a.io", "9.9.9.9", 30)], now=0.0)  # clamped up to 60 s
    for t in (50.0, 100.0, 150.0, 200.0):
        assert names.name_of("9.9.9.9", t) == "a.io"
    assert names.name_of("9.9.9.9", 259.0) == "a.io"  # 200 + 60 not yet reached
    assert names.name_of("9.9.9.9", 320.0) is None  # 259 + 60 passed


def test_names_newer_answer_replaces_older() -> None:
    names = DnsNames()
    names.learn([DnsAnswer("old.io", "5.5.5.5", 3600)], now=0.0)
    names.learn([DnsAnswer("new.io", "5.5.5.5", 60)], now=100.0)
    assert len(names) == 1
    assert names.name_of("5.5.5.5", 161.0) is None  # the newer TTL governs too
    names.learn([DnsAnswer("new.io", "5.5.5.5", 60)], now=200.0)
    assert names.name_of("5.5.5.5", 250.0) == "new.io"


def test_names_bound_evicts_oldest_inserted() -> None:
    names = DnsNames(max_entries=2)
    names.learn([DnsAnswer("x.io", "1.0.0.1", 600), DnsAnswer("y.io", "1.0.0.2", 600)], now=0.0)
    names.learn([DnsAnswer("x.io", "1.0.0.1", 600)], now=1.0)  # re-learned: now the newest
    names.learn([DnsAnswer("z.io", "1.0.0.3", 600)], now=2.0)
    assert len(names) == 2
    assert [names.name_of(a, 3.0) for a in ("1.0.0.1", "1.0.0.2", "1.0.0.3")] == [
        "x.io", None, "z.io"]
    names.learn([DnsAnswer("w.io", "1.0.0.4", 600)], now=4.0)
    assert [names.name_of(a, 5.0) for a in ("1.0.0.1", "1.0.0.3", "1.0.0.4")] == [
        None, "z.io", "w.io"]


def test_names_learn_from_a_parsed_response() -> None:
    names = DnsNames()
    names.learn(parse_answers(basic()), now=10.0)
    assert names.name_of("2001:db8::1", 20.0) == "api.example.com"
    assert names.name_of("93.184.216.35", 70.0) is None  # ttl 0 → min 60


def well_formed(answers: list[DnsAnswer], ancount_at_most: int) -> bool:
    return len(answers) <= ancount_at_most and all(
        isinstance(a, DnsAnswer) and str(ip_address(a.address)) == a.address
        and a.name == a.name.lower() and 0 <= a.ttl < 2**32 for a in answers)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes_never_raise(data: bytes) -> None:
    assert well_formed(parse_answers(data), 0xFFFF)


@FUZZ
@given(st.integers(0, 0xFFFF), st.binary(max_size=600))
def test_fuzz_plausible_header_then_garbage(ancount: int, rest: bytes) -> None:
    data = struct.pack(">HHHHHH", 1, RESPONSE, 1, ancount, 0, 0) + rest
    assert well_formed(parse_answers(data), ancount)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
       st.integers(0, 1000))
def test_fuzz_mutated_response_never_raises(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(message(question("a.b.io"), [
        rr(b"\x03www" + TO_QUESTION, CNAME, TO_QUESTION), rr(TO_QUESTION, A, packed("1.2.3.4")),
        rr(TO_QUESTION, AAAA, packed("::1"))]))
    for index, value in edits:
        data[index % len(data)] = value
    assert well_formed(parse_answers(bytes(data[:cut])), 0xFFFF)
