"""The dispatcher: a ZeroMQ ROUTER-to-ROUTER broker around :class:`~pipeline.core.scheduler.Scheduler`.

* The **client side** (a ROUTER) takes JOB messages from the ingest (over ``inproc``) and
  from ``pipeline transcribe --connect`` (over ``job_endpoint``), and returns each RESULT
  to the client that sent the job, by its identity.
* The **worker side** (a ROUTER with ``ROUTER_MANDATORY``) talks to DEALER workers: READY,
  JOB, RESULT, HEARTBEAT and DISCONNECT, as in docs/architecture.md.

This module only moves frames and keeps time; every decision is the scheduler's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from .config import DispatcherConfig
from .core import wire
from .core.scheduler import Scheduler
from .errors import ProtocolError
from .metrics import Metrics

log = logging.getLogger("pipeline.dispatcher")

#: Largest message a peer may send: 30 s of float32 audio is 1.9 MB; leave room for batch.
MAX_MESSAGE_BYTES = 16 << 20
HWM = 10000


class Dispatcher:
    """Binds both sides and routes until :meth:`close`.

    Args:
        ctx: the asyncio ZeroMQ context shared with the ingest (for ``inproc``).
        config: endpoints and heartbeat settings.
        client_endpoint: where job clients connect (the ingest uses ``inproc``).
        keys_dir: CurveZMQ keys for the worker side (``pipeline keys init``); "" for none.
    """

    def __init__(self, ctx: zmq.asyncio.Context, config: DispatcherConfig, client_endpoint: str,
                 keys_dir: str = "") -> None:
        self.config = config
        # Called with a worker's READY info (``pid``, ``name``) when its job ran past
        # ``job_deadline_s``: the supervisor sets it, to kill and replace that process.
        self.on_hung: Callable[[dict[str, Any]], object] | None = None
        self.auth: Any = None  # the ZAP authenticator, with keys
        self.scheduler = Scheduler(
            config.heartbeat_interval_s, config.heartbeat_liveness, config.max_attempts, config.max_queued_jobs,
            config.live_reserve_s, config.partial_reserve,
        )
        self.clients = ctx.socket(zmq.ROUTER)
        self.workers = ctx.socket(zmq.ROUTER)
        for sock in (self.clients, self.workers):
            sock.linger = 100
            sock.sndhwm = sock.rcvhwm = HWM
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # Sends go through plain sockets on the same handles: on a zmq.asyncio socket, a
        # NOBLOCK send that fails (EHOSTUNREACH under ROUTER_MANDATORY: the peer is gone)
        # does not raise, it returns a Future holding the error, which nobody reads.
        self._to_workers: zmq.Socket[Any] = zmq.Socket.shadow(self.workers.underlying)
        self._to_clients: zmq.Socket[Any] = zmq.Socket.shadow(self.clients.underlying)
        if keys_dir:
            self._secure(ctx, keys_dir)
        self.clients.bind(client_endpoint)
        self.workers.bind(config.worker_endpoint)
        self.worker_endpoint = self.workers.getsockopt_string(zmq.LAST_ENDPOINT)
        self.job_endpoint = ""
        if config.job_endpoint:  # for `pipeline transcribe --connect`: same socket, one more endpoint
            self.clients.bind(config.job_endpoint)
            self.job_endpoint = self.clients.getsockopt_string(zmq.LAST_ENDPOINT)
            if not any(h in self.job_endpoint for h in ("://127.", "://[::1]", "://localhost", "ipc://", "inproc://")):
                log.warning("the job endpoint %s is reachable from other hosts and has no authentication: "
                            "anyone who reaches it can use the workers (docs/deploy.md)", self.job_endpoint)
        self.malformed = 0
        self.jobs_done = 0
        self.hung = 0
        self.metrics: Metrics | None = None  # set by the service when it serves /metrics
        self._counted = (0, 0)  # retries and hung workers already added to the metrics
        # Where the workers' time goes, by job kind: {"final": [jobs, decode seconds], ...}
        self.decode_by_kind: dict[str, list[float]] = {p.name.lower(): [0, 0.0] for p in wire.Priority}
        self._closed = False

    def _secure(self, ctx: zmq.asyncio.Context, keys_dir: str) -> None:
        """CurveZMQ on the worker side, with a ZAP handler that admits only allowed keys."""
        from zmq.auth.asyncio import AsyncioAuthenticator

        from .keys import load_server

        keys = load_server(keys_dir)  # ConfigError if anything is missing
        self.auth = AsyncioAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve(domain="workers", location=str(keys.authorized))
        self.workers.curve_secretkey = keys.secret
        self.workers.curve_publickey = keys.public
        self.workers.curve_server = True
        self.workers.zap_domain = b"workers"
        log.info("worker endpoint: CurveZMQ, workers allowed from %s", keys.authorized)

    @property
    def ready_workers(self) -> int:
        """Workers that have said READY and are not known to be dead (busy or idle).

        Each counts once: a dead one is forgotten when a send to it fails or its
        heartbeats expire, and a restarted one replaces its old identity
        (:meth:`Scheduler.worker_ready`). ``/readyz`` and ``stt_ready_workers`` read this.
        """
        return len(self.scheduler.workers)

    async def run(self) -> None:
        poller = zmq.asyncio.Poller()
        poller.register(self.clients, zmq.POLLIN)
        poller.register(self.workers, zmq.POLLIN)
        interval = self.config.heartbeat_interval_s
        next_beat = time.monotonic() + interval
        while not self._closed:
            events = dict(await poller.poll(max(0.0, next_beat - time.monotonic()) * 1000))
            now = time.monotonic()
            if self.workers in events:
                await self._drain(self.workers, self._on_worker, now)
            if self.clients in events:
                await self._drain(self.clients, self._on_client, now)
            if now >= next_beat:
                next_beat = now + interval
                self._heartbeat(now)
            self._dispatch()
            self._report_failures()

    async def _drain(self, sock: zmq.asyncio.Socket, handle: Any, now: float) -> None:
        """Handle every message waiting on ``sock`` without going back to the poller."""
        for _ in range(1000):
            try:
                frames = await sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            handle(frames[0], frames[1:], now)

    def _on_client(self, client: bytes, frames: list[bytes], now: float) -> None:
        try:
            command, header, payload = wire.decode(frames)
            if command is wire.Command.CANCEL:
                self.scheduler.cancel(client, str(header.get("prefix", "")))
                return
            if command is not wire.Command.JOB:
                raise ProtocolError("bad_command", f"clients may only send JOB or CANCEL, not {command.name}")
            job = wire.decode_job(header, payload)
        except ProtocolError as exc:
            self.malformed += 1
            log.warning("dropped a malformed message from client %r: %s", client, exc)
            return
        if not self.scheduler.submit(client, job, now):
            self._reply(client, {"job_id": job.job_id, "attempt": 0, "text": "", "error": "queue full"})

    def _on_worker(self, identity: bytes, frames: list[bytes], now: float) -> None:
        try:
            command, header, _ = wire.decode(frames)
        except ProtocolError as exc:
            self.malformed += 1
            log.warning("dropped a malformed message from worker %r: %s", identity, exc)
            return
        if command is wire.Command.READY:
            known = identity in self.scheduler.workers
            replaced = self.scheduler.worker_ready(identity, now, header)
            if not known:
                log.info("worker %s (pid %s) is ready%s", header.get("name"), header.get("pid"),
                         f"; it replaces {len(replaced)} old identity(ies) of its process slot" if replaced else "")
            return
        if command is wire.Command.DISCONNECT:
            self.scheduler.worker_gone(identity)
            return
        if not self.scheduler.worker_seen(identity, now):
            # Majordomo: a worker we do not know (declared dead, or from before a restart)
            # is told to disconnect; it rejoins with READY once it is idle.
            self._send_worker(identity, wire.encode(wire.Command.DISCONNECT))
            return
        if command is wire.Command.RESULT:
            done = self.scheduler.result(identity, str(header.get("job_id")), int(header.get("attempt", -1)))
            if done is None:
                log.info("dropped a stale result for %s from %r", header.get("job_id"), identity)
                return
            client, job = done
            self.jobs_done += 1
            kind = job.priority.name.lower()
            tally = self.decode_by_kind[kind]
            tally[0] += 1
            tally[1] += float(header.get("decode_s", 0.0))
            if self.metrics is not None:
                self.metrics.jobs.labels(kind, "failed" if header.get("error") else "done").inc()
                self.metrics.decode_seconds.labels(kind).observe(float(header.get("decode_s", 0.0)))
            self._reply(client, header)
            self.scheduler.worker_ready(identity, now)

    def _heartbeat(self, now: float) -> None:
        for identity in self.scheduler.expire(now):
            log.warning("worker %r missed its heartbeats; declared dead", identity)
        deadline = self.config.job_deadline_s
        for worker in self.scheduler.overdue(now, deadline):
            assert worker.job is not None
            log.error("worker %s (pid %s) ran job %s past its %g s deadline; replacing it",
                      worker.info.get("name"), worker.info.get("pid"), worker.job.job_id, deadline)
            self.hung += 1
            self.scheduler.worker_gone(worker.identity, f"the worker ran past the {deadline:g} s job deadline")
            self._send_worker(worker.identity, wire.encode(wire.Command.DISCONNECT))
            if self.on_hung is not None:
                self.on_hung(dict(worker.info))
        if expired := self.scheduler.expire_queued(now, self.config.queue_deadline_s):
            log.error("%d job(s) waited more than %g s for a worker; their clients were told",
                      expired, self.config.queue_deadline_s)
        for identity in list(self.scheduler.workers):
            self._send_worker(identity, wire.encode(wire.Command.HEARTBEAT))

    def _dispatch(self) -> None:
        # A job whose send fails is queued again, first, and its worker forgotten: go round
        # until every pairing is sent (each failure removes a worker, so this ends).
        while assignments := self.scheduler.assignments(time.monotonic()):
            for identity, _, job in assignments:
                self._send_worker(identity, wire.encode_job(job), job=True)

    def _report_failures(self) -> None:
        for failure in self.scheduler.take_failures():
            log.error("job %s failed: %s", failure.job.job_id, failure.reason)
            if self.metrics is not None:
                self.metrics.jobs.labels(failure.job.priority.name.lower(), "failed").inc()
            self._reply(failure.client, {"job_id": failure.job.job_id, "attempt": failure.job.attempt,
                                         "text": "", "error": failure.reason})

    def _send_worker(self, identity: bytes, frames: list[Any], job: bool = False) -> bool:
        """Send to one worker; if it is gone, forget it at once (docs/reliability.md).

        Under ROUTER_MANDATORY a send to a peer whose connection closed (a killed process)
        fails with EHOSTUNREACH: its job goes back to the queue now, not after its
        heartbeats expire. ``job``: ``frames`` is the job it holds, which never left.
        """
        try:
            self._to_workers.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            if self.scheduler.worker_gone(identity, "worker unreachable", delivered=not job):
                log.warning("worker %r unreachable (%s); forgetting it", identity, exc)
            return False
        return True

    def _reply(self, client: bytes, header: dict[str, Any]) -> None:
        try:
            self._to_clients.send_multipart([client, *wire.encode(wire.Command.RESULT, header)], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.info("client %r gone; dropped result %s (%s)", client, header.get("job_id"), exc)

    def refresh_metrics(self) -> None:
        """Copy the broker's state into the gauges, and its tallies into the counters."""
        m, s = self.metrics, self.scheduler
        if m is None:
            return
        for priority in wire.Priority:
            m.queue_depth.labels(priority.name.lower()).set(s.queued(priority))
        m.in_flight.set(s.in_flight())
        m.ready_workers.set(self.ready_workers)
        m.retries.inc(s.retried - self._counted[0])
        m.hung.inc(self.hung - self._counted[1])
        self._counted = (s.retried, self.hung)

    def summary(self) -> str:
        """One line on the work done, for the log at shutdown."""
        kinds = ", ".join(f"{kind} {int(n)} ({secs:.1f} s, {secs / n if n else 0:.3f} s each)"
                          for kind, (n, secs) in self.decode_by_kind.items() if n)
        s = self.scheduler
        return (f"jobs done: {self.jobs_done}; decode time by kind: {kinds or 'none'}; "
                f"partials replaced while queued: {s.replaced}; cancelled: {s.cancelled}; retried: {s.retried}; "
                f"hung workers replaced: "
                f"{self.hung}; malformed: {self.malformed}")

    def close(self) -> None:
        self._closed = True
        self.clients.close(linger=100)
        self.workers.close(linger=100)
        if self.auth is not None:
            self.auth.stop()
