"""The ingest and the gateway: the asyncio WebSocket side of the pipeline.

One process, one event loop, both directions of every client connection:

* **ingest**: frames from a client go into its :class:`~pipeline.core.session.Session`
  (which decodes, resamples, runs VAD and cuts utterances); the jobs it produces go to the
  dispatcher over a ZeroMQ DEALER socket.
* **gateway**: one task reads every RESULT from that socket, finds the session by the job
  id's prefix, and queues the session's replies on the connection's writer.

Each connection has its own writer task and queue, so a client that reads slowly delays
only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

import websockets
import zmq
import zmq.asyncio
from websockets.asyncio.server import Server, ServerConnection, serve

from .config import SAMPLE_RATE, Config
from .core import wire
from .core.admission import Admission, Refusal
from .core.load import LoadView, PoolLoad
from .core.limits import ConnectionLimits, Violation
from .core.segmenter import VadFn
from .core.realtime import RealtimeSession
from .core.session import Session, State
from .errors import ConfigError, ProtocolError
from .handshake import REALTIME_PATH, STREAM_PATH, Handshake, client_host
from .logs import Throttle
from .metrics import Metrics

log = logging.getLogger("pipeline.ingest")
#: websockets' own log lines: its "connection rejected (401 ...)" has no address, and ours do.
_quiet = logging.getLogger("pipeline.ingest.websockets")
_quiet.setLevel(logging.WARNING)

__all__ = ["REALTIME_PATH", "STREAM_PATH", "Ingest", "tls_context"]


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context from PEM files.

    Raises:
        ConfigError: a file is missing or they do not make a certificate and its key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {cert} and key {key}: {exc}") from None
    return context


class _Connection:
    """A client connection: its session, its limits and its outgoing queue."""

    def __init__(self, ws: ServerConnection, session: Session | RealtimeSession, config: Config) -> None:
        self.ws = ws
        self.host = client_host(ws)
        self.session = session
        self.limits = ConnectionLimits(config.server, time.monotonic())
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.max_unread = config.server.max_unread_messages
        self.level_interval_s = config.server.level_interval_ms / 1000
        self._last_level = 0.0
        self.overflowed = False
        self.writer: asyncio.Task[None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "level":
            now = time.monotonic()
            if now - self._last_level < self.level_interval_s:
                return  # at most ~10 level messages a second, however fast audio arrives
            self._last_level = now
        if self.outbox.qsize() >= self.max_unread:
            self.overflowed = True
            return
        self.outbox.put_nowait(json.dumps(message))

    async def write(self) -> None:
        while (item := await self.outbox.get()) is not None:
            await self.ws.send(item)


class Ingest:
    """The WebSocket server, with its gateway.

    Args:
        config: the pipeline config.
        ctx: the ZeroMQ context (shared with the dispatcher for ``inproc``).
        jobs_endpoint: the dispatcher's client endpoint.
        vad_factory: makes a per-stream VAD function.
        ready: returns how many workers are ready (for ``/readyz``).
    """

    def __init__(
        self,
        config: Config,
        ctx: zmq.asyncio.Context,
        jobs_endpoint: str,
        vad_factory: Callable[[], VadFn],
        ready: Callable[[], int],
    ) -> None:
        self.config = config
        self.vad_factory = vad_factory
        self.ready = ready
        self.jobs = ctx.socket(zmq.DEALER)
        self.jobs.linger = 0
        self.jobs.sndhwm = self.jobs.rcvhwm = 10000
        self.jobs.connect(jobs_endpoint)
        self.connections: dict[str, _Connection] = {}
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)
        self.server: Server | None = None
        self.accepting = True
        self.api_keys = config.security.client_keys()
        self.admission = Admission(config.server, config.security)
        self.load = PoolLoad(config.server.max_final_load, config.server.stream_cost, config.server.late_final_s)
        self.handshake = Handshake(self)
        self.metrics: Metrics | None = None
        self._finals_out: dict[str, float] = {}  # "session:utterance" -> when its unanswered final job was made
        self._throttle = Throttle()  # log lines that a client can cause, per reason
        self._traced: set[str] = set()  # exception types already logged with a traceback

    async def start(self) -> Server:
        cfg, sec = self.config.server, self.config.security
        self.server = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self.handshake.process_request,
            process_response=self.handshake.process_response,
            create_connection=self.handshake.connection_class(),
            logger=_quiet,
            # Browsers send Origin; programs do not (None), and are not affected.
            origins=cast(Any, [None, *sec.allowed_origins]) if sec.allowed_origins else None,
            ssl=tls_context(sec.tls_cert, sec.tls_key) if sec.tls_cert else None,
            max_size=cfg.max_message_bytes,
            compression=None,  # PCM does not compress; deflate would only cost CPU
            # A client we close while it floods us reads our close frame only after the
            # frames it already sent: do not wait the default 10 s for its answer.
            close_timeout=3.0,
        )
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    def load_refusal(self) -> Refusal | None:
        """A 503 if the workers cannot carry one more stream (docs/performance.md, "Admission")."""
        if not self.config.server.max_final_load:
            return None
        now = time.monotonic()
        oldest = min(self._finals_out.values(), default=now)
        return self.load.refusal(LoadView(self.ready(), self.admission.sessions, now - oldest), now)

    # -- ingest ------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        session_id = f"{self._prefix}{next(self._ids)}"
        path = ws.request.path.split("?", 1)[0] if ws.request is not None else STREAM_PATH
        session: Session | RealtimeSession = (RealtimeSession if path == REALTIME_PATH else Session)(
            session_id, self.config, self.vad_factory)
        conn = _Connection(ws, session, self.config)
        await self._flush(conn)  # the Realtime protocol speaks first: session.created
        self.connections[session_id] = conn
        self.admission.opened(conn.host)
        self.load.sessions_changed(self.admission.sessions, time.monotonic())
        conn.writer = asyncio.create_task(conn.write())
        log.info("session %s opened from %s", session_id, ws.remote_address)
        try:
            while True:
                violation = None
                try:
                    frame = await asyncio.wait_for(ws.recv(), conn.limits.idle_wait(time.monotonic()))
                except asyncio.TimeoutError:  # cancelling recv() loses nothing (websockets' docs)
                    if conn.session.outstanding:
                        conn.limits.on_message(time.monotonic())  # it is waiting for us, not idle
                        continue
                    violation = conn.limits.idle(time.monotonic())
                    if violation is None:
                        continue
                else:
                    now = time.monotonic()
                    before = conn.session.audio_samples
                    self._receive(conn, frame)
                    # Audio is counted as the session decoded it, whichever frame brought it.
                    violation = conn.limits.on_audio(max(0, conn.session.audio_samples - before) / SAMPLE_RATE, now)
                    await self._flush(conn)
                    if conn.session.outstanding:
                        conn.limits.on_message(now)  # it is waiting for us, not idle
                    elif violation is None:
                        violation = conn.limits.idle(now)  # pings may keep coming, but no audio does
                if violation is not None:
                    await self._enforce(conn, violation)
                    break
                if conn.overflowed:
                    log.warning("session %s: closed with 1008, the client is not reading (%d replies unread)",
                                session_id, conn.outbox.qsize())
                    await ws.close(1008, "client is not reading its messages")
                    break
        except websockets.ConnectionClosed:
            pass
        finally:
            # Its queued jobs are for no one now: the dispatcher drops them.
            with contextlib.suppress(zmq.ZMQError):
                await self.jobs.send_multipart(wire.encode(wire.Command.CANCEL, {"prefix": session_id + ":"}),
                                               flags=zmq.NOBLOCK)
            del self.connections[session_id]
            self.admission.closed(conn.host)
            self.load.sessions_changed(self.admission.sessions, time.monotonic())
            for key in [k for k in self._finals_out if k.startswith(session_id + ":")]:
                del self._finals_out[key]
            conn.session.close()
            conn.writer.cancel()
            log.info("session %s closed (%s outstanding)", session_id, conn.session.outstanding)

    def _receive(self, conn: _Connection, frame: str | bytes) -> None:
        """Feed one frame to the session.

        The core answers bad input with an ``error`` and never raises; should a bug make it
        raise anyway, the client gets ``internal_error`` for that message and keeps its
        connection and its pending finals (no close 1011), and the log gets one traceback
        per kind of failure rather than one per message.
        """
        try:
            if isinstance(frame, str):
                conn.session.receive_text(frame)  # may carry audio: /v1/realtime's append
            else:
                conn.session.receive_bytes(frame)
        except Exception as exc:  # noqa: BLE001 - defence in depth, see above
            self._internal_error(conn, exc, "a client message")

    def _internal_error(self, conn: _Connection, exc: Exception, what: str) -> None:
        kind = type(exc).__name__
        dropped = self._throttle.allow(f"internal:{kind}", time.monotonic())
        if dropped is not None:
            first = kind not in self._traced and len(self._traced) < 64
            if first:
                self._traced.add(kind)
            log.error("session %s: internal error on %s, dropped: %s: %.200s%s", conn.session.id, what, kind, exc,
                      f" ({dropped} more like it not logged)" if dropped else "", exc_info=exc if first else None)
        if self.metrics is not None:
            self.metrics.errors.labels("internal_error").inc()
        conn.send(conn.session.error_message("internal_error", f"the server failed on {what} and dropped it; "
                                                               "the stream goes on"))

    async def _enforce(self, conn: _Connection, violation: Violation) -> None:
        """Tell the client which limit it hit, and close; after its finals if the limit says so."""
        log.info("session %s: %s: %s", conn.session.id, violation.code, violation.message)
        if violation.flush and conn.session.state is State.STREAMING:
            conn.session.finish()
            await self._flush(conn)
            deadline = time.monotonic() + self.config.server.shutdown_timeout_s
            while conn.session.outstanding and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        conn.send(conn.session.error_message(violation.code, violation.message))
        conn.outbox.put_nowait(None)  # the writer ends after what is queued
        if conn.writer is not None:
            await asyncio.wait([conn.writer], timeout=2.0)
        await conn.ws.close(violation.close_code, violation.code.replace("_", " "))

    async def _flush(self, conn: _Connection) -> None:
        metrics = self.metrics
        for message in conn.session.messages_to_send():
            if metrics is not None and message["type"] == "error":
                code = message.get("code") or (message.get("error") or {}).get("code", "")
                metrics.errors.labels(code).inc()
            conn.send(message)
        for job in conn.session.jobs_to_send():
            if job.priority == wire.Priority.FINAL:
                self._finals_out.setdefault(job.key, time.monotonic())
            await self.jobs.send_multipart(wire.encode_job(job), copy=False)

    # -- gateway -----------------------------------------------------------------------

    async def gateway(self) -> None:
        """Route every result from the dispatcher to its session, forever."""
        while True:
            frames = await self.jobs.recv_multipart()
            try:
                command, header, _ = wire.decode(frames)
            except ProtocolError as exc:
                log.warning("dropped a malformed result: %s", exc)
                continue
            job_id = str(header.get("job_id", ""))
            conn = self.connections.get(job_id.split(":", 1)[0])
            if command is wire.Command.RESULT and job_id.endswith(":f"):
                made = self._finals_out.pop(job_id[:-2], None)
                if made is not None and self.metrics is not None:
                    self.metrics.final_latency.observe(time.monotonic() - made)
                if "decode_s" in header:
                    self.load.final_done(float(header["decode_s"]), time.monotonic())
            if command is not wire.Command.RESULT or conn is None:
                continue  # the client left; its results have nowhere to go
            try:
                conn.session.receive_result(header)
            except Exception as exc:  # noqa: BLE001 - as in _receive: one session's bug stops nothing else
                self._internal_error(conn, exc, "a worker's result")
            await self._flush(conn)

    # -- shutdown ----------------------------------------------------------------------

    async def drain(self, timeout_s: float) -> int:
        """Stop accepting, flush every stream's finals, close clients with 1001.

        Returns:
            How many sessions still had outstanding finals at the deadline.
        """
        self.accepting = False
        if self.server is not None:
            self.server.close(close_connections=False)  # stop listening; keep the clients
        for conn in list(self.connections.values()):
            if conn.session.state is State.STREAMING:
                conn.session.finish()
                await self._flush(conn)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(c.session.outstanding for c in self.connections.values()):
            await asyncio.sleep(0.05)
        unfinished = sum(1 for c in self.connections.values() if c.session.outstanding)
        conns = list(self.connections.values())
        for conn in conns:
            conn.outbox.put_nowait(None)  # the writer ends after what is already queued
        writers = [c.writer for c in conns if c.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=2.0)
        closes = [c.ws.close(1001, "server shutting down") for c in list(self.connections.values())]
        await asyncio.gather(*closes, return_exceptions=True)
        if self.server is not None:
            await asyncio.wait_for(self.server.wait_closed(), timeout=5.0)
        self.jobs.close(linger=0)
        return unfinished
