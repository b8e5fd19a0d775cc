"""Dead workers (issue 13, defects 2 and 3): a job goes elsewhere at once, and a worker counts
once, only while it is alive; with real worker processes killed with SIGKILL (fake ASR).

The heartbeat liveness is set so long here that expiry never happens within a test: only
the fast paths (a failed send, a READY that replaces an old identity) can explain what the
tests see.
"""

from __future__ import annotations

import logging
import os
import signal
import urllib.request
from dataclasses import replace

import zmq
from websockets.sync.client import connect

from pipeline.core import wire

from tests.conftest import fake_config, running
from tests.helpers import timeout
from tests.integration.test_reliability import (
    assert_one_final_each,
    holder_of_next_final,
    ready_workers,
    stream_all,
    until_stopped,
    wait_for,
)

NEVER_EXPIRES = 10**6  # heartbeat intervals: days


def metric(p, name: str) -> float:
    with urllib.request.urlopen(p.http_base + "/metrics", timeout=timeout(10)) as r:
        lines = r.read().decode().splitlines()
    (line,) = [line for line in lines if line.startswith(name + " ")]
    return float(line.split()[1])


def immortal_config(**workers):
    config = fake_config(**workers)
    return replace(config, dispatcher=replace(config.dispatcher, heartbeat_liveness=NEVER_EXPIRES))


def test_a_killed_workers_job_is_dispatched_again_at_once(pipeline_factory, caplog):
    """Defect 2: the send to the dead worker fails (EHOSTUNREACH) and the job goes to the other."""
    caplog.set_level(logging.INFO, logger="pipeline.dispatcher")
    p = pipeline_factory(immortal_config(fake_delay_ms=1000, count=2))
    killed: list[int] = []

    def kill_once(m: dict) -> None:
        if m["type"] == "final" and not killed:
            pid = holder_of_next_final(p)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with connect(p.url) as ws:
        stream_all(ws)
        messages = until_stopped(ws, kill_once)  # with expiry only, this would wait for days
    assert killed
    assert_one_final_each(messages)
    assert not [m for m in messages if m["type"] == "error"]
    assert metric(p, "stt_job_retries_total") >= 1
    log = [r.getMessage() for r in caplog.records]
    unreachable = [i for i, line in enumerate(log) if "unreachable" in line and "forgetting it" in line]
    assert unreachable, log
    # The send failed before the replacement process said READY: that is what re-dispatched it.
    replaced = [i for i, line in enumerate(log) if "replaces" in line]
    assert not replaced or unreachable[0] < replaced[0]


def test_readyz_counts_only_live_workers_once_each(pipeline_factory):
    """Defect 3: after kill -9 of both workers /readyz said 2, and 3 or 4 during restarts."""
    p = pipeline_factory(immortal_config(count=2))
    assert ready_workers(p) == 2
    first = list(p.worker_pids)
    for pid in first:
        os.kill(pid, signal.SIGKILL)
    # Nothing alive: not ready, although no heartbeat has expired (the supervisor restarts
    # a worker only after a backoff of a second or more).
    wait_for(lambda: ready_workers(p) == 0, 10, "/readyz to see that no worker is alive")
    readings: list[int] = []

    def both_back() -> bool:
        readings.append(ready_workers(p))
        return readings[-1] == 2

    wait_for(both_back, 30, "both replacements")
    assert max(readings) <= 2, readings
    assert metric(p, "stt_ready_workers") == 2
    live = {int(w.info["pid"]) for w in p.dispatcher.scheduler.workers.values()}
    assert not live & set(first) and all(map(running, live))


def test_a_worker_back_on_a_new_socket_counts_once(pipeline_factory, caplog):
    """Defect 3: a process that reconnects (its dispatcher was frozen, say) is one worker, not one per socket.

    A remote worker is played by DEALER sockets that say READY as one process would
    after two reconnections; the old sockets stay connected, so no send to them fails.
    """
    caplog.set_level(logging.INFO, logger="pipeline.dispatcher")
    p = pipeline_factory(immortal_config(count=1))
    info = {"name": "remote-0", "pid": 4242, "model": "fake"}
    ctx = zmq.Context.instance()
    sockets = []
    try:
        for n in range(1, 4):
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(p.dispatcher.worker_endpoint)
            sock.send_multipart(wire.encode(wire.Command.READY, info))
            sockets.append(sock)
            wait_for(lambda: sum("remote-0 (pid 4242) is ready" in r.getMessage() for r in caplog.records) == n,
                     10, f"READY number {n}")
            assert ready_workers(p) == 2 and metric(p, "stt_ready_workers") == 2  # the local one, and remote-0
    finally:
        for sock in sockets:
            sock.close(linger=0)
