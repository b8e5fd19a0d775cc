"""Admission by measured load (pipeline/core/load.py): the cost per stream, and when to refuse."""

from pipeline.core.load import PRIOR_WEIGHT_S, LoadView, PoolLoad


def make(**kw):
    return PoolLoad(**{"target": 0.75, "per_stream_s": 0.08, "late_final_s": 1.0, "window_s": 60.0, **kw})


def test_with_no_evidence_the_prior_decides():
    load = make()
    assert load.per_stream(0.0) == 0.08
    # 0.75 x 2 workers / 0.08 = 18.75: the 18th stream is admitted, the 19th is not.
    assert load.refusal(LoadView(workers=2, sessions=17, oldest_final_s=0.0), 0.0) is None
    refusal = load.refusal(LoadView(workers=2, sessions=18, oldest_final_s=0.0), 0.0)
    assert refusal is not None and (refusal.status, refusal.reason) == (503, "at_capacity")
    assert refusal.retry_after_s > 0 and "2 worker(s)" in refusal.message


def test_the_measured_cost_takes_over_from_the_prior():
    load = make()
    load.sessions_changed(10, 0.0)
    for t in range(1, 61):  # 10 streams, finals worth 0.2 worker-seconds each second: 0.02 a stream
        load.final_done(0.2, float(t))
    measured = load.per_stream(60.0)
    expected = (0.2 * 60 + 0.08 * PRIOR_WEIGHT_S) / (10 * 60 + PRIOR_WEIGHT_S)
    assert abs(measured - expected) < 1e-9 and measured < 0.03
    # Cheap streams: many more fit than the prior would allow.
    assert load.refusal(LoadView(2, 40, 0.0), 60.0) is None


def test_expensive_streams_fill_the_pool_sooner():
    load = make()
    load.sessions_changed(4, 0.0)
    for t in range(1, 61):
        load.final_done(0.8, float(t))  # 0.2 worker-seconds a second per stream
    assert load.per_stream(60.0) > 0.15
    assert load.refusal(LoadView(2, 8, 0.0), 60.0) is not None
    assert load.refusal(LoadView(4, 8, 0.0), 60.0) is None  # two more workers joined: room again


def test_young_streams_cost_at_least_the_prior():
    load = make()
    load.sessions_changed(8, 0.0)  # a burst of arrivals, no final yet
    assert load.per_stream(10.0) == 0.08
    assert load.refusal(LoadView(2, 18, 0.0), 10.0) is not None


def test_old_evidence_leaves_the_window():
    load = make(window_s=10.0)
    load.sessions_changed(1, 0.0)
    load.final_done(5.0, 1.0)
    assert load.per_stream(5.0) > 0.08
    load.sessions_changed(0, 20.0)
    assert load.per_stream(100.0) == 0.08  # nothing in the window: the prior again


def test_session_seconds_follow_the_count():
    load = make(window_s=100.0)
    load.sessions_changed(2, 0.0)
    load.sessions_changed(4, 10.0)
    load.sessions_changed(1, 20.0)
    assert load._session_seconds(30.0) == 2 * 10 + 4 * 10 + 1 * 10


def test_late_finals_refuse_whatever_the_estimate():
    refusal = make().refusal(LoadView(workers=8, sessions=0, oldest_final_s=1.5), 0.0)
    assert refusal is not None and refusal.reason == "overloaded" and "1.5 s" in refusal.message


def test_no_workers_is_for_readiness_not_admission():
    assert make().refusal(LoadView(workers=0, sessions=100, oldest_final_s=9.0), 0.0) is None
