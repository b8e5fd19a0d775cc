"""The dispatcher's state machine: priorities, coalescing, LRU, liveness, retries."""

from __future__ import annotations

import numpy as np

from pipeline.core.scheduler import Scheduler
from pipeline.core.wire import Job, Priority

AUDIO = np.zeros(16, dtype=np.float32)


def job(job_id: str, priority: Priority = Priority.FINAL, key: str = "") -> Job:
    return Job(job_id, priority, AUDIO, key=key)


def test_finals_before_partials_before_batch():
    s = Scheduler()
    s.submit(b"c", job("b1", Priority.BATCH))
    s.submit(b"c", job("p1", Priority.PARTIAL, key="u1"))
    s.submit(b"c", job("f1", Priority.FINAL))
    for w in (b"w1", b"w2", b"w3"):
        s.worker_ready(w, 0.0)
    assert [j.job_id for _, _, j in s.assignments()] == ["f1", "p1", "b1"]


def test_least_recently_used_worker_first():
    s = Scheduler()
    s.worker_ready(b"w1", 0.0)
    s.worker_ready(b"w2", 0.0)
    s.submit(b"c", job("a"))
    ((worker, client, j),) = s.assignments()
    assert worker == b"w1" and client == b"c" and j.attempt == 1


def test_newer_partial_replaces_queued_one_in_place():
    s = Scheduler()
    s.submit(b"c", job("p1", Priority.PARTIAL, key="u1"))
    s.submit(b"c", job("p2", Priority.PARTIAL, key="u2"))
    s.submit(b"c", job("p3", Priority.PARTIAL, key="u1"))
    assert s.queued() == 2 and s.replaced == 1
    s.worker_ready(b"w", 0.0)
    ((_, _, j),) = s.assignments()
    assert j.job_id == "p3"


def test_final_drops_queued_partial_of_its_utterance():
    s = Scheduler()
    s.submit(b"c", job("p1", Priority.PARTIAL, key="u1"))
    s.submit(b"c", job("f1", Priority.FINAL, key="u1"))
    assert s.queued(Priority.PARTIAL) == 0 and s.queued(Priority.FINAL) == 1


def test_result_routes_to_client_and_stale_results_are_dropped():
    s = Scheduler()
    s.worker_ready(b"w", 0.0)
    s.submit(b"c", job("a"))
    ((_, _, j),) = s.assignments()
    assert s.result(b"w", "a", attempt=j.attempt + 5) is None
    assert s.result(b"w", "a", attempt=j.attempt) == (b"c", j)
    assert s.result(b"w", "a", attempt=j.attempt) is None  # only once


def test_dead_worker_job_goes_to_another_worker_with_new_attempt():
    s = Scheduler(heartbeat_interval_s=1.0, liveness=3)
    s.worker_ready(b"w1", 0.0)
    s.submit(b"c", job("a"))
    s.assignments()
    s.worker_ready(b"w2", 2.5)
    assert s.expire(3.0) == [b"w1"]
    ((worker, _, j),) = s.assignments()
    assert worker == b"w2" and j.attempt == 2
    assert s.result(b"w1", "a", 1) is None  # the late answer of the dead worker
    assert s.result(b"w2", "a", 2) is not None


def test_heard_worker_stays_alive():
    s = Scheduler(heartbeat_interval_s=1.0, liveness=3)
    s.worker_ready(b"w", 0.0)
    assert s.worker_seen(b"w", 2.0)
    assert s.expire(4.0) == []
    assert s.expire(5.0) == [b"w"]
    assert not s.worker_seen(b"w", 5.0)


def test_job_fails_after_max_attempts():
    s = Scheduler(max_attempts=2)
    s.submit(b"c", job("a"))
    for i in range(2):
        s.worker_ready(b"w%d" % i, 0.0)
        s.assignments()
        s.worker_gone(b"w%d" % i)
    (failure,) = s.take_failures()
    assert failure.client == b"c" and failure.job.job_id == "a" and "2 attempts" in failure.reason
    assert s.queued() == 0


def test_queue_limit_refuses():
    s = Scheduler(max_queued=2)
    assert s.submit(b"c", job("a")) and s.submit(b"c", job("b"))
    assert not s.submit(b"c", job("c"))


def test_ready_while_holding_a_job_requeues_it():
    s = Scheduler()
    s.worker_ready(b"w", 0.0)
    s.submit(b"c", job("a"))
    s.assignments()
    s.worker_ready(b"w", 0.1)  # restarted and forgot the job
    ((_, _, j),) = s.assignments()
    assert j.job_id == "a" and j.attempt == 2


def test_batch_work_leaves_a_worker_free_while_live_streams_are_active():
    s = Scheduler(live_reserve_s=10.0)
    for w in (b"w1", b"w2"):
        s.worker_ready(w, 0.0)
    s.submit(b"c", job("f1"), now=100.0)
    assert [j.job_id for _, _, j in s.assignments(now=100.0)] == ["f1"]
    s.submit(b"t", job("b1", Priority.BATCH), now=101.0)
    s.submit(b"t", job("b2", Priority.BATCH), now=101.0)
    assert s.assignments(now=101.0) == []  # w2 is the last ready worker: kept for live work
    s.result(b"w1", "f1", 1)
    s.worker_ready(b"w1", 101.5)
    ((batch_worker, _, b1),) = s.assignments(now=101.5)  # one of the two may take batch work
    assert b1.job_id == "b1"
    # A live final that arrives now finds the other worker free.
    s.submit(b"c", job("f2"), now=102.0)
    ((final_worker, _, f2),) = s.assignments(now=102.0)
    assert f2.job_id == "f2" and final_worker != batch_worker


def test_batch_work_takes_every_worker_when_no_live_stream_was_seen_lately():
    s = Scheduler(live_reserve_s=10.0)
    s.submit(b"c", job("f0"), now=0.0)  # long ago
    for w in (b"w1", b"w2"):
        s.worker_ready(w, 0.0)
    s.assignments(now=0.0)
    s.result(b"w1", "f0", 1)
    s.worker_ready(b"w1", 1.0)
    s.submit(b"t", job("b1", Priority.BATCH), now=20.0)
    s.submit(b"t", job("b2", Priority.BATCH), now=20.0)
    assert len(s.assignments(now=20.0)) == 2


def test_a_single_worker_is_shared_with_batch_work():
    s = Scheduler(live_reserve_s=10.0)
    s.worker_ready(b"w1", 0.0)
    s.submit(b"c", job("p1", Priority.PARTIAL, key="u"), now=5.0)
    s.assignments(now=5.0)
    s.result(b"w1", "p1", 1)
    s.worker_ready(b"w1", 5.5)
    s.submit(b"t", job("b1", Priority.BATCH), now=6.0)
    assert [j.job_id for _, _, j in s.assignments(now=6.0)] == ["b1"]  # nothing to reserve with one worker


def test_cancel_drops_only_that_clients_queued_jobs_with_the_prefix():
    s = Scheduler()
    s.submit(b"ingest", job("a1:0:f"))
    s.submit(b"ingest", job("a1:1:p3", Priority.PARTIAL, key="a1:1"))
    s.submit(b"ingest", job("a12:0:f"))  # another session whose id starts alike
    s.submit(b"other", job("a1:9:f"))  # same prefix, another client
    s.worker_ready(b"w1", 0.0)
    s.assignments()  # a1:0:f is now running: it is left to finish
    assert s.cancel(b"ingest", "a1:") == 1
    assert s.cancelled == 1
    s.worker_ready(b"w2", 0.0)
    s.worker_ready(b"w3", 0.0)
    assert {j.job_id for _, _, j in s.assignments()} == {"a1:9:f", "a12:0:f"}
    assert s.cancel(b"ingest", "") == 0


# -- a worker counts once, by its process slot (issue 13, defect 3) ----------------------


def test_a_restarted_process_replaces_its_old_identity_and_its_job_is_queued_again():
    s = Scheduler()
    assert s.worker_ready(b"old", 0.0, {"name": "worker-0", "pid": 10, "slot": "run1/worker-0"}) == []
    s.worker_ready(b"w1", 0.0, {"name": "worker-1", "pid": 11, "slot": "run1/worker-1"})
    s.submit(b"c", job("a"))
    s.submit(b"c", job("b"))
    held = {identity: j.job_id for identity, _, j in s.assignments()}
    # worker-0 was killed and its replacement (a new pid, a new identity) says READY.
    assert s.worker_ready(b"new", 1.0, {"name": "worker-0", "pid": 20, "slot": "run1/worker-0"}) == [b"old"]
    assert set(s.workers) == {b"w1", b"new"} and s.retried == 1
    ((identity, _, j),) = s.assignments()
    assert identity == b"new" and j.job_id == held[b"old"] and j.attempt == 2


def test_a_process_that_reconnects_counts_once_and_other_slots_are_apart():
    s = Scheduler()
    for identity in (b"a", b"b", b"c"):  # one process, three sockets (the front end was frozen)
        s.worker_ready(identity, 0.0, {"name": "worker-0", "pid": 10})  # no slot: name and pid
    s.worker_ready(b"x", 0.0, {"name": "worker-0", "pid": 10, "slot": "run2/worker-0"})  # another host's
    s.worker_ready(b"y", 0.0, {"name": "worker-0", "pid": 11})
    s.worker_ready(b"z", 0.0)  # says nothing of itself: counted by identity alone
    assert set(s.workers) == {b"c", b"x", b"y", b"z"}
    assert s.worker_ready(b"c", 1.0, {"name": "worker-0", "pid": 10}) == []  # its own READY again


def test_a_job_whose_send_failed_does_not_use_up_an_attempt():
    s = Scheduler(max_attempts=2)
    s.submit(b"c", job("a"))
    for dead in (b"d1", b"d2", b"d3"):  # three vanished workers in a row
        s.worker_ready(dead, 0.0)
        ((identity, _, j),) = s.assignments()
        assert s.worker_gone(identity, "worker unreachable", delivered=False)
    assert not s.take_failures() and s.retried == 3
    s.worker_ready(b"live", 0.0)
    ((_, _, j),) = s.assignments()
    assert j.job_id == "a" and j.attempt == 1  # its first real attempt
    assert not s.worker_gone(b"unknown")


def test_partials_leave_the_reserve_free_for_the_next_final():
    s = Scheduler(partial_reserve=1)
    for w in (b"w1", b"w2"):
        s.worker_ready(w, 0.0)
    for n in (1, 2):
        s.submit(b"c", job(f"p{n}", Priority.PARTIAL, key=f"u{n}"))
    assert [j.job_id for _, _, j in s.assignments()] == ["p1"]  # p2 waits: one worker stays free
    s.submit(b"c", job("f1"))
    assert [j.job_id for _, _, j in s.assignments()] == ["f1"]  # at once, on the reserved worker
    assert s.queued(Priority.PARTIAL) == 1


def test_finals_take_every_worker_and_a_lone_worker_takes_partials():
    s = Scheduler(partial_reserve=1)
    for w in (b"w1", b"w2"):
        s.worker_ready(w, 0.0)
    s.submit(b"c", job("f1"))
    s.submit(b"c", job("f2"))
    assert [j.job_id for _, _, j in s.assignments()] == ["f1", "f2"]
    lone = Scheduler(partial_reserve=1)
    lone.worker_ready(b"w1", 0.0)
    lone.submit(b"c", job("p1", Priority.PARTIAL, key="u1"))
    assert [j.job_id for _, _, j in lone.assignments()] == ["p1"]  # no reserve with one worker
