from __future__ import annotations

from traceprobe_map.ip_directory import IpDirectory


def test_reused_ip_resolves_by_time() -> None:
    d: IpDirectory[str] = IpDirectory(grace_seconds=30)
    d.claim("10.0.0.5", "shop/cart-1", since=100)
    d.release("10.0.0.5", "shop/cart-1", at=200)
    d.claim("10.0.0.5", "batch/etl-7", since=205)
    assert d.lookup("10.0.0.5", 150) == "shop/cart-1"
    assert d.lookup("10.0.0.5", 202) == "shop/cart-1"  # late record, within grace
    assert d.lookup("10.0.0.5", 210) == "batch/etl-7"  # new owner: no inheritance
    assert d.lookup("10.0.0.9", 150) is None


def test_grace_period_ends_and_expire_bounds_memory() -> None:
    d: IpDirectory[str] = IpDirectory(grace_seconds=30)
    d.claim("10.0.0.5", "a", since=0)
    d.release("10.0.0.5", "a", at=10)
    assert d.lookup("10.0.0.5", 39) == "a"
    assert d.lookup("10.0.0.5", 41) is None
    assert d.expire(now=41) == 1 and len(d) == 0


def test_claim_without_release_closes_the_previous_tenure() -> None:
    d: IpDirectory[str] = IpDirectory(grace_seconds=30, max_history=2)
    d.claim("ip", "a", since=0)
    d.claim("ip", "a", since=5)  # idempotent re-claim by the same owner
    d.claim("ip", "b", since=10)  # missed the delete: b's claim ends a's tenure
    assert d.lookup("ip", 5) == "a" and d.lookup("ip", 12) == "b"
    d.claim("ip", "c", since=20)
    assert d.lookup("ip", 5) != "a"  # history capped at 2 tenures: a is forgotten
