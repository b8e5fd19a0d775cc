"""The log throttle: a flood of lines becomes a few, with a count of the rest."""

from __future__ import annotations

from pipeline.logs import Throttle


def test_a_burst_per_window_then_a_count_of_what_was_dropped():
    t = Throttle(window_s=10.0, burst=2)
    assert [t.allow("401", now=0.1 * i) for i in range(100)] == [0, 0] + [None] * 98
    assert t.allow("busy", now=5.0) == 0  # keys are counted apart
    assert t.allow("401", now=10.0) == 98  # the next window's first line says how many
    assert t.allow("401", now=10.1) == 0


def test_keys_are_bounded():
    t = Throttle(max_keys=3)
    for i in range(1000):
        t.allow(f"k{i}", now=0.0)
    assert len(t._keys) == 3
