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
import subprocess
import sys
import threading
import urllib.request
from dataclasses import replace

import zmq

from pipeline.core import wire

from tests.conftest import fake_config, running
from tests.helpers import timeout
from tests.integration.test_reliability import (
    assert_one_final_each,
    ready_workers,
    stream_killing_a_worker,
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
    messages, killed = stream_killing_a_worker(p)  # with expiry only, this would wait for days
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


def test_readyz_after_the_front_end_was_frozen_counts_each_worker_once(tmp_path):
    """Defect 3 as reported: `pipeline run` SIGSTOPped while its workers reconnect, then SIGCONTed.

    Each worker finds the dispatcher silent and reconnects on a new socket; thawed, the
    dispatcher hears the old socket's queued heartbeats and the new socket's READY. It
    counted both (4 with 2 processes, for a liveness period) and now counts each once.
    Before the fix this failed one run in three: whether the old socket's heartbeats are
    read before its connection is torn down is up to libzmq. The two tests above show
    the same defect every time.
    """
    config = tmp_path / "c.toml"
    config.write_text('[server]\nport = 0\n[dispatcher]\nworker_endpoint = "tcp://127.0.0.1:*"\njob_endpoint = ""\n'
                      'heartbeat_interval_s = 0.25\n[workers]\nmodel = "fake"\ncount = 2\n')
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()

    def seen(text: str) -> int:
        return sum(text in line for line in list(lines))

    try:
        wait_for(lambda: seen("pipeline: ready") == 1, 60, "the pipeline to be ready")
        (url,) = [line.split("listening on ")[1].strip() for line in list(lines) if "pipeline: listening on" in line]
        base = url.replace("ws://", "http://").rsplit("/v1/", 1)[0]

        def readyz() -> int:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=timeout(5)) as r:
                    return int(r.read().decode().split()[1])
            except OSError:  # 503 while none is ready
                return 0

        ready_before = seen("is ready")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            # The second "silent" of each worker comes after its first reconnection.
            wait_for(lambda: seen("dispatcher silent") >= 4, 30, "the workers to reconnect")
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: seen("is ready") >= ready_before + 2, 10, "the new sockets' READY to be handled")
        readings = [readyz()]
        wait_for(lambda: readings.append(readyz()) or readings[-1] == 2, 60, "both workers back")
        assert max(readings) <= 2, readings
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout(30))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout(5))
    assert proc.returncode == 0, "".join(lines[-20:])
