"""Per-connection limits, with time passed in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import ServerConfig
from pipeline.core.limits import ConnectionLimits


def limits(**kw) -> ConnectionLimits:
    return ConnectionLimits(ServerConfig(**kw), now=0.0)


def test_real_time_audio_never_trips_the_rate_limit():
    lim = limits(max_audio_rate=2.0, audio_burst_s=5.0)
    assert all(lim.on_audio(0.1, now=0.1 * i) is None for i in range(1, 20000))  # 2000 s at 1x


def test_a_backlog_within_the_burst_is_fine_but_a_flood_is_not():
    lim = limits(max_audio_rate=2.0, audio_burst_s=5.0)
    assert all(lim.on_audio(0.5, now=0.0) is None for _ in range(10))  # 5 s at once
    v = lim.on_audio(0.5, now=0.0)
    assert v is not None and v.code == "rate_limited" and not v.flush and v.close_code == 1008
    assert "2x real time" in v.message


def test_sustained_rate_just_under_the_limit_is_fine_and_just_over_is_not():
    under, over = limits(max_audio_rate=2.0, audio_burst_s=1.0), limits(max_audio_rate=2.0, audio_burst_s=1.0)
    assert all(under.on_audio(0.19, now=0.1 * i) is None for i in range(1, 1000))
    assert any(over.on_audio(0.21, now=0.1 * i) is not None for i in range(1, 1000))


def test_session_length_limit_flushes_first():
    lim = limits(max_session_s=10.0, max_audio_rate=0.0)
    assert lim.on_audio(10.0, now=1.0) is None
    v = lim.on_audio(0.1, now=2.0)
    assert v is not None and v.code == "session_limit" and v.flush


def test_idle_time_counts_from_the_last_message():
    lim = limits(idle_timeout_s=30.0)
    assert lim.idle(now=29.0) is None and lim.idle_wait(now=29.0) == 1.0
    lim.on_message(now=29.0)
    assert lim.idle(now=58.0) is None
    v = lim.idle(now=59.0)
    assert v is not None and v.code == "idle_timeout"


def test_zero_turns_each_limit_off():
    lim = limits(max_audio_rate=0.0, max_session_s=0.0, idle_timeout_s=0.0)
    assert lim.on_audio(1e6, now=0.0) is None and lim.idle(now=1e9) is None and lim.idle_wait(0.0) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2), st.floats(0, 1)), max_size=200))
def test_the_bucket_never_lets_more_than_burst_plus_rate_times_elapsed(frames):
    lim = limits(max_audio_rate=2.0, audio_burst_s=3.0, max_session_s=0.0)
    now, sent = 0.0, 0.0
    for seconds, gap in frames:
        now += gap
        if lim.on_audio(seconds, now) is not None:
            return
        sent += seconds
        assert sent <= 3.0 + 2.0 * now + 1e-9


def test_one_message_of_the_largest_legal_size_passes_on_a_fresh_connection():
    """Issue 13, defect 5: whatever its format, one max-size message fits the default burst."""
    from pipeline.core.limits import max_message_audio_s

    server = ServerConfig()
    assert max_message_audio_s(server.max_message_bytes) == server.max_message_bytes / 16000  # PCM16, 8 kHz
    assert ConnectionLimits(server, now=0.0).on_audio(max_message_audio_s(server.max_message_bytes), now=0.0) is None


def test_messages_without_audio_do_not_keep_a_connection_from_idling():
    """Issue 13, defect 6: pings alone held a session forever."""
    lim = limits(idle_timeout_s=30.0)
    for t in range(1, 30):
        assert lim.on_audio(0.0, now=float(t)) is None  # a ping a second
    assert lim.idle_wait(now=29.0) == 1.0
    v = lim.idle(now=30.0)
    assert v is not None and v.code == "idle_timeout" and "no audio" in v.message
    lim.on_audio(0.02, now=30.0)  # audio does count
    assert lim.idle(now=59.0) is None
