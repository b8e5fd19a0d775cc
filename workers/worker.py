"""The worker process: a Paranoid Pirate worker around an ASR engine.

The main thread owns the DEALER socket and does all the talking: READY, RESULT and
HEARTBEAT out, JOB and HEARTBEAT in. Decoding blocks for hundreds of milliseconds, so it
runs on a thread of its own and hands results back over an ``inproc`` PAIR socket; the
main thread keeps heartbeating meanwhile, and the dispatcher can tell a busy worker from a
dead or frozen one. If the dispatcher goes silent, the worker reconnects with exponential
backoff (1 s to 32 s), as in the ZeroMQ Guide's ppworker.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import zmq

from pipeline.config import Config
from pipeline.core import wire
from pipeline.errors import ProtocolError

from .engine import Engine, load_engine, warm_up

log = logging.getLogger("pipeline.worker")

RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 32.0


class _Decoder(threading.Thread):
    """Runs jobs one at a time; talks to the main thread only through a PAIR socket."""

    def __init__(self, ctx: zmq.Context[Any], engine: Engine, address: str) -> None:
        super().__init__(name="decoder", daemon=True)
        self.engine = engine
        self.sock = ctx.socket(zmq.PAIR)
        self.sock.linger = 0
        self.sock.connect(address)

    def run(self) -> None:
        while True:
            frames = self.sock.recv_multipart(copy=True)
            if not frames[0]:
                break  # the main thread asked us to stop
            command, header, payload = wire.decode(frames)
            job = wire.decode_job(header, payload)
            started = time.perf_counter()
            reply: dict[str, Any] = {"job_id": job.job_id, "attempt": job.attempt,
                                     "duration_s": round(len(job.audio) / 16000, 4)}
            try:
                reply.update(self.engine.transcribe(job.audio, {**job.options, "attempt": job.attempt}))
            except Exception as exc:  # the engine's failure is the job's, not the worker's
                log.exception("job %s failed", job.job_id)
                reply.update(text="", error=f"{type(exc).__name__}: {exc}")
            reply["decode_s"] = round(time.perf_counter() - started, 4)
            self.sock.send_multipart(wire.encode(wire.Command.RESULT, reply))
        self.sock.close()


class Worker:
    """One worker's connection to the dispatcher.

    Args:
        endpoint: the dispatcher's worker endpoint, e.g. ``tcp://127.0.0.1:5555``.
        config: the pipeline config (engine and heartbeat settings).
        name: shown in the dispatcher's logs and metrics.
        parent_pid: exit when this process is no longer our parent (no orphans).
        slot: the supervisor's name for this process's place, sent in READY, so that the
            dispatcher counts one worker per slot across restarts and reconnections.
    """

    def __init__(self, endpoint: str, config: Config, name: str, parent_pid: int | None = None,
                 slot: str = "") -> None:
        self.endpoint = endpoint
        self.config = config
        self.name = name
        self.parent_pid = parent_pid
        self.slot = slot
        self.interval = config.dispatcher.heartbeat_interval_s
        self.liveness_s = self.interval * config.dispatcher.heartbeat_liveness
        self.stopping = False
        self.rejoin = False  # the dispatcher forgot us: say READY again once idle
        self.jobs_done = 0
        self.jobs_failed = 0
        self.keys = None
        if config.security.keys_dir:  # read now: a bad key stops the worker before it loads a model
            from pipeline.keys import load_worker

            self.keys = load_worker(config.security.keys_dir, config.security.worker_key)

    def run(self, engine: Engine) -> int:
        ctx: zmq.Context[Any] = zmq.Context()
        address = f"inproc://decoder-{id(self)}"
        pair = ctx.socket(zmq.PAIR)
        pair.linger = 0
        pair.bind(address)
        decoder = _Decoder(ctx, engine, address)
        decoder.start()
        backoff = RECONNECT_MIN_S
        busy = False
        sock = self._connect(ctx)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(pair, zmq.POLLIN)
        last_heard = last_sent = time.monotonic()
        try:
            while not (self.stopping and not busy):
                timeout = max(0.0, min(last_sent + self.interval, last_heard + self.liveness_s) - time.monotonic())
                events = dict(poller.poll(int(timeout * 1000)))
                now = time.monotonic()
                if pair in events:
                    frames = pair.recv_multipart()
                    busy = False
                    self.jobs_done += 1
                    sock.send_multipart(frames)
                    last_sent = now
                if sock in events:
                    last_heard = now
                    backoff = RECONNECT_MIN_S
                    busy = self._handle(sock.recv_multipart(), pair, busy)
                if self._orphaned():
                    break
                silent = now - last_heard >= self.liveness_s
                if silent or (self.rejoin and not busy):
                    if silent:
                        log.warning("%s: dispatcher silent for %.1f s; reconnecting in %.0f s",
                                    self.name, now - last_heard, backoff)
                        if not self._wait(backoff):
                            break
                        backoff = min(backoff * 2, RECONNECT_MAX_S)
                    else:
                        log.info("%s: the dispatcher forgot us; joining again", self.name)
                    self.rejoin = False
                    poller.unregister(sock)
                    sock.close(linger=0)
                    sock = self._connect(ctx, announce=not busy)
                    poller.register(sock, zmq.POLLIN)
                    last_heard = last_sent = time.monotonic()
                elif now - last_sent >= self.interval:
                    sock.send_multipart(wire.encode(wire.Command.HEARTBEAT))
                    last_sent = now
            try:
                sock.send_multipart(wire.encode(wire.Command.DISCONNECT), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        finally:
            pair.send_multipart([b""])
            decoder.join(timeout=5)
            sock.close(linger=100)
            pair.close(linger=0)
            ctx.term()
        log.info("%s: stopped after %d jobs", self.name, self.jobs_done)
        return 0

    def _orphaned(self) -> bool:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            log.warning("%s: parent process is gone; exiting", self.name)
            return True
        return False

    def _wait(self, seconds: float) -> bool:
        """Sleep through a reconnect backoff; False if we should exit instead."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stopping or self._orphaned():
                return False
            time.sleep(min(0.2, deadline - time.monotonic()))
        return True

    def _connect(self, ctx: zmq.Context[Any], announce: bool = True) -> zmq.Socket[Any]:
        """A fresh DEALER (ppworker's way of dropping whatever was queued on the old one).

        A worker still decoding does not announce itself: its RESULT will reach a
        dispatcher that no longer knows it, which answers DISCONNECT, and it rejoins then.
        """
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, 64 << 20)
        if self.keys is not None:  # CurveZMQ: encrypted, and the dispatcher checks our key
            sock.curve_secretkey = self.keys.secret
            sock.curve_publickey = self.keys.public
            sock.curve_serverkey = self.keys.server_public
        sock.connect(self.endpoint)
        if announce:
            sock.send_multipart(wire.encode(wire.Command.READY, {"name": self.name, "pid": os.getpid(),
                                                                 "model": self.config.workers.model,
                                                                 "slot": self.slot}))
        return sock

    def _handle(self, frames: list[bytes], pair: zmq.Socket[Any], busy: bool) -> bool:
        try:
            command, header, payload = wire.decode(frames)
        except ProtocolError as exc:
            log.warning("%s: dropped a malformed message: %s", self.name, exc)
            return busy
        if command is wire.Command.JOB:
            if busy:
                log.error("%s: got a job while busy; dropping it", self.name)
                return busy
            pair.send_multipart(frames)
            return True
        if command is wire.Command.DISCONNECT:
            self.rejoin = True  # we were declared dead (e.g. frozen past the deadline)
        return busy


def main(endpoint: str, config: Config, name: str, parent_pid: int | None = None, log_level: int = logging.INFO,
         slot: str = "") -> int:
    """Entry point of a spawned worker process."""
    from pipeline.logs import setup

    setup(config.security.log_format, log_level, process_name=name)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every decode's duration
    # Ctrl-C reaches the whole process group; the supervisor decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = Worker(endpoint, config, name, parent_pid, slot)

    def on_term(signum: int, frame: object) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    engine = load_engine(config.workers)
    warm_up(engine)
    return worker.run(engine)
