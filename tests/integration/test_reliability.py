"""Faults, hangs, limits and leaks, with real sockets and real worker processes (fake ASR).

Each test is one scenario of docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from dataclasses import replace

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pipeline.client import load_audio
from tests.conftest import fake_config, running
from tests.data import JFK
from tests.helpers import pcm16, timeout

AUDIO = load_audio(str(JFK))  # 11 s, four utterances


def stream_all(ws, audio=AUDIO, start: str = '{"action":"start","partials":false}') -> None:
    ws.send(start)
    for i in range(0, len(audio), 1600):
        ws.send(pcm16(audio[i : i + 1600]))
    ws.send('{"action":"stop"}')


def until_stopped(ws, on_message=None, limit_s: float = 60) -> list[dict]:
    messages = []
    while (m := json.loads(ws.recv(timeout=timeout(limit_s)))) != {"type": "status", "message": "stopped"}:
        messages.append(m)
        if on_message is not None:
            on_message(m)
    return messages


def ready_workers(p) -> int:
    try:
        with urllib.request.urlopen(p.http_base + "/readyz", timeout=2) as r:
            return int(r.read().decode().split()[1])
    except Exception:  # noqa: BLE001 - 503 while none is ready
        return 0


def wait_for(predicate, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout(limit_s)
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def summary(p) -> str:
    (line,) = [line for line in p.lines if "jobs done" in line]
    return line


def count(line: str, label: str) -> int:
    return int(line.split(label + ": ")[1].split(";")[0])


def assert_one_final_each(messages: list[dict], at_least: int = 3) -> list[dict]:
    finals = [m for m in messages if m["type"] == "final"]
    assert [f["utterance_id"] for f in finals] == list(range(len(finals))) and len(finals) >= at_least, finals
    return finals


def holder_of_next_final(p) -> int:
    """Pid of the worker decoding a final right now."""
    def find() -> int | None:
        for w in p.dispatcher.scheduler.workers.values():
            if w.job is not None and w.job.job_id.endswith(":f"):
                return int(w.info["pid"])
        return None

    wait_for(lambda: find() is not None, 10, "a worker to hold a final")
    pid = find()
    assert pid is not None
    return pid


def stream_killing_a_worker(p) -> tuple[list[dict], list[int]]:
    """Stream everything; at the first final, SIGKILL the worker holding the next one."""
    killed: list[int] = []

    def kill_once(m: dict) -> None:
        if m["type"] == "final" and not killed:
            pid = holder_of_next_final(p)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with connect(p.url) as ws:
        stream_all(ws)
        messages = until_stopped(ws, kill_once)
    return messages, killed


def test_sigkill_of_one_worker_mid_utterance_gives_the_final_once(pipeline_factory):
    p = pipeline_factory(fake_config(fake_delay_ms=1000, count=2))
    messages, killed = stream_killing_a_worker(p)
    assert killed
    assert_one_final_each(messages)
    assert not [m for m in messages if m["type"] == "error"]
    wait_for(lambda: ready_workers(p) == 2, 20, "the killed worker to be replaced")
    assert p.stop() == 0
    assert count(summary(p), "retried") >= 1


def test_sigstop_then_sigcont_a_worker(pipeline_factory):
    """A frozen worker is declared dead and its job goes elsewhere; thawed, its late
    answer is dropped and it rejoins."""
    p = pipeline_factory(fake_config(fake_delay_ms=800, count=2))
    stopped: list[int] = []

    def freeze_once(m: dict) -> None:
        if m["type"] == "final" and not stopped:
            pid = holder_of_next_final(p)
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)

    try:
        with connect(p.url) as ws:
            stream_all(ws)
            messages = until_stopped(ws, freeze_once)
        assert stopped
        assert_one_final_each(messages)
        assert not [m for m in messages if m["type"] == "error"]
        assert ready_workers(p) == 1  # the frozen one is out
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: ready_workers(p) == 2, 20, "the thawed worker to rejoin")
    assert running(stopped[0])  # it was not replaced: it came back
    # Its late answer to the job it held was recognised as stale: the client saw one final.
    assert p.stop() == 0
    assert count(summary(p), "retried") >= 1


def test_a_hung_worker_is_killed_and_replaced(pipeline_factory):
    """The decoder hangs while the heartbeat thread goes on: the job deadline catches it."""
    config = fake_config(fake_stall_s=60, count=2)
    config = replace(config, dispatcher=replace(config.dispatcher, job_deadline_s=1.0))
    p = pipeline_factory(config)
    first = list(p.worker_pids)
    with connect(p.url) as ws:
        stream_all(ws, AUDIO[: 3 * 16000])  # one utterance
        messages = until_stopped(ws)
    finals = assert_one_final_each(messages, at_least=1)
    assert finals[0]["text"].startswith("speech of")
    assert not [m for m in messages if m["type"] == "error"]
    wait_for(lambda: sum(map(running, first)) < 2, 10, "the hung worker to be killed")
    wait_for(lambda: ready_workers(p) == 2, 20, "a replacement worker")
    assert p.stop() == 0
    assert count(summary(p), "hung workers replaced") >= 1


def test_no_worker_to_take_a_final_gives_an_error_not_a_wait(pipeline_factory):
    config = fake_config(count=1)
    config = replace(config, dispatcher=replace(config.dispatcher, queue_deadline_s=1.0))
    p = pipeline_factory(config)
    (pid,) = p.worker_pids
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: ready_workers(p) == 0, 10, "the frozen worker to be declared dead")
        t0 = time.monotonic()
        with connect(p.url) as ws:
            stream_all(ws, AUDIO[: 3 * 16000])
            messages = until_stopped(ws, limit_s=30)
        waited = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    errors = [m for m in messages if m["type"] == "error"]
    assert errors and errors[0]["code"] == "asr_failed" and "no worker took the job" in errors[0]["message"], messages
    assert [m["type"] for m in messages].count("final") == 1  # the utterance still gets its (empty) final
    assert waited < timeout(30)
    wait_for(lambda: ready_workers(p) == 1, 20, "the worker to come back")


def test_a_client_leaving_mid_utterance_leaks_nothing(pipeline_factory):
    p = pipeline_factory(fake_config(fake_delay_ms=800, count=1))  # slow: its jobs queue up
    for _ in range(3):
        with connect(p.url) as ws:
            ws.send('{"action":"start"}')
            for i in range(0, 6 * 16000, 1600):  # mid-utterance, partials in flight
                ws.send(pcm16(AUDIO[i : i + 1600]))
            ws.socket.shutdown(socket.SHUT_RDWR)  # vanish without a close frame
    wait_for(lambda: not p.ingest.connections, 10, "the sessions to be dropped")
    scheduler = p.dispatcher.scheduler
    wait_for(lambda: scheduler.queued() == 0 and scheduler.in_flight() == 0, 20, "the dispatcher to drain")
    # The pipeline is whole: the slots are free and a new client is served.
    with connect(p.url) as ws:
        stream_all(ws)
        assert_one_final_each(until_stopped(ws))
    assert p.stop() == 0
    assert count(summary(p), "cancelled") >= 1  # the leavers' queued jobs were dropped, not decoded


def test_a_client_that_never_reads_is_closed_before_its_replies_pile_up(pipeline_factory, caplog):
    caplog.set_level("WARNING", logger="pipeline.ingest")
    config = fake_config(count=1)
    config = replace(config, server=replace(config.server, max_unread_messages=50))
    p = pipeline_factory(config)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # so the server feels it at once
    host, port = p.url.split("//")[1].split("/")[0].split(":")
    sock.connect((host, int(port)))
    closed = None
    with connect(p.url, sock=sock, max_queue=1) as ws:
        # Each ping gets a pong nobody reads. Loopback buffers hold a few MB, so it takes
        # some 10^5 of them before the server's writes block and its queue fills.
        deadline = time.monotonic() + timeout(60)
        while time.monotonic() < deadline:
            try:
                for _ in range(1000):
                    ws.send('{"action":"ping"}')
            except (ConnectionClosed, OSError) as exc:
                closed = exc
                break
    assert closed is not None, "the server kept a client that never reads"
    # The close frame waits behind the unread replies, so the client may not see it; the
    # server says why it closed.
    assert any("not reading" in r.getMessage() and "1008" in r.getMessage() for r in caplog.records)
    wait_for(lambda: not p.ingest.connections, 10, "the session to be dropped")
    assert p.stop() == 0


@pytest.mark.parametrize("limit", ["rate", "session", "idle"])
def test_limits_give_an_error_and_close_1008(pipeline_factory, limit):
    server = {"rate": {"max_audio_rate": 2.0, "audio_burst_s": 2.0},
              "session": {"max_session_s": 4.0},
              "idle": {"idle_timeout_s": 0.5}}[limit]
    config = fake_config(count=1)
    config = replace(config, server=replace(config.server, **server))
    p = pipeline_factory(config)
    messages = []
    with connect(p.url) as ws:
        ws.send('{"action":"start","partials":false}')
        try:
            if limit != "idle":
                for i in range(0, len(AUDIO), 1600):  # as fast as it goes: far over 2x
                    ws.send(pcm16(AUDIO[i : i + 1600]))
            while True:
                messages.append(json.loads(ws.recv(timeout=timeout(20))))
        except ConnectionClosed as exc:
            code, reason = exc.rcvd.code, exc.rcvd.reason
    errors = [m for m in messages if m["type"] == "error"]
    expected = {"rate": "rate_limited", "session": "session_limit", "idle": "idle_timeout"}[limit]
    assert [e["code"] for e in errors] == [expected], messages
    assert code == 1008 and reason == expected.replace("_", " ")
    if limit == "session":
        # A normal end: the audio within the limit was transcribed, then `stopped`.
        assert [m for m in messages if m["type"] == "final"]
        assert {"type": "status", "message": "stopped"} in messages
    wait_for(lambda: not p.ingest.connections, 10, "the session to be dropped")
    # The server is fine: another client streams normally (within the limits).
    with connect(p.url) as ws:
        stream_all(ws, AUDIO[: int(1.5 * 16000)])
        assert_one_final_each(until_stopped(ws), at_least=1)


def test_realtime_audio_counts_against_the_rate_limit_and_errors_in_its_shape(pipeline_factory):
    import base64

    config = fake_config(count=1)
    p = pipeline_factory(replace(config, server=replace(config.server, max_audio_rate=2.0, audio_burst_s=2.0)))
    pcm = pcm16(AUDIO)  # 11 s (as 16 kHz samples, read as 24 kHz: 7 s), sent at once
    messages = []
    with connect(p.url.replace("/v1/stream", "/v1/realtime")) as ws:
        try:
            for i in range(0, len(pcm), 9600):
                ws.send(json.dumps({"type": "input_audio_buffer.append",
                                    "audio": base64.b64encode(pcm[i : i + 9600]).decode()}))
            while True:
                messages.append(json.loads(ws.recv(timeout=timeout(20))))
        except ConnectionClosed as exc:
            code = exc.rcvd.code
    errors = [m for m in messages if m["type"] == "error"]
    assert code == 1008 and [e["error"]["code"] for e in errors] == ["rate_limited"], messages
