"""Admission at the handshake: session caps by address, and wrong keys slowed then locked out."""

from __future__ import annotations

import pytest

from pipeline.config import SecurityConfig, ServerConfig
from pipeline.core import admission
from pipeline.core.admission import Admission, address_key


def make(**server) -> Admission:
    return Admission(ServerConfig(**server), SecurityConfig(max_auth_failures=3, auth_failure_window_s=60.0))


def test_sessions_are_capped_in_all_and_per_address():
    a = make(max_sessions=4, max_sessions_per_address=2)
    for host in ("10.0.0.1", "10.0.0.1"):
        assert a.capacity(host) is None
        a.opened(host)
    refusal = a.capacity("10.0.0.1")
    assert refusal is not None and (refusal.status, refusal.reason) == (503, "per_address")
    assert "at most 2" in refusal.message
    assert a.capacity("10.0.0.2") is None
    a.opened("10.0.0.2")
    a.opened("10.0.0.3")
    busy = a.capacity("10.0.0.9")
    assert busy is not None and busy.reason == "busy"
    a.closed("10.0.0.1")
    assert a.capacity("10.0.0.1") is None and a.sessions == 3


def test_zero_turns_the_per_address_cap_off():
    a = make(max_sessions=100, max_sessions_per_address=0)
    for _ in range(50):
        a.opened("10.0.0.1")
    assert a.capacity("10.0.0.1") is None


def test_an_ipv6_host_is_its_64():
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1:2") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1" and address_key("10.0.0.1") == "10.0.0.1"
    assert address_key("not an address") == "not an address"


def test_wrong_keys_wait_longer_each_time_then_the_address_is_locked_out_for_the_window():
    a = make()
    assert [a.auth_failed("10.0.0.1", now=float(i)) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    refusal = a.locked_out("10.0.0.1", now=10.0)
    assert refusal is not None and (refusal.status, refusal.reason, refusal.retry_after_s) == (429, "auth_lockout", 50)
    assert a.locked_out("10.0.0.2", now=10.0) is None  # another address
    assert a.locked_out("10.0.0.1", now=60.0) is None  # the window is over
    assert a.auth_failed("10.0.0.1", now=60.0) == 0.1  # and counting starts again


def test_the_delay_is_capped_and_a_right_key_forgives():
    a = Admission(ServerConfig(), SecurityConfig(max_auth_failures=0))  # no lockout
    delays = [a.auth_failed("10.0.0.1", now=0.0) for _ in range(100)]
    assert max(delays) == admission.AUTH_DELAY_MAX_S and a.locked_out("10.0.0.1", now=0.0) is None
    a.auth_ok("10.0.0.1")
    assert a.auth_failed("10.0.0.1", now=0.0) == admission.AUTH_DELAY_STEP_S


def test_memory_is_bounded_whatever_the_number_of_addresses(monkeypatch):
    monkeypatch.setattr(admission, "MAX_TRACKED_ADDRESSES", 100)
    a = make()
    for i in range(10000):
        a.auth_failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", now=0.0)
    assert len(a._failures) == 100
