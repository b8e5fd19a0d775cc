"""``pipeline run``: the dispatcher, the worker pool and the ingest in one process tree.

Startup: bind the dispatcher, spawn the workers, open the WebSocket server. Shutdown, on
SIGINT or SIGTERM (whose handlers only set an event, as uvicorn's do), runs in order:
stop accepting, flush the finals of audio already received, close clients with 1001,
stop the workers, close the sockets. It exits 0 when all of that fit in the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable

import zmq
import zmq.asyncio

from .config import Config
from .dispatcher import Dispatcher
from .errors import PipelineError
from .ingest import STREAM_PATH, Ingest
from .metrics import Metrics
from .supervisor import Supervisor

log = logging.getLogger("pipeline")

JOBS_ENDPOINT = "inproc://jobs"


def _vad_factory(config: Config):  # type: ignore[no-untyped-def]
    from .vad import SileroStream, warm_up

    warm_up()
    return SileroStream


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM only set ``stop`` (uvicorn's habit); shutdown runs in order after."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not in the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)


def local_endpoint(bound: str) -> str:
    """Where local workers should connect for a bound endpoint (``0.0.0.0`` is not an address)."""
    return bound.replace("://0.0.0.0:", "://127.0.0.1:").replace("://*:", "://127.0.0.1:")


async def serve(
    config: Config,
    stop: asyncio.Event | None = None,
    announce: Callable[[str], None] = print,
    on_started: Callable[[Ingest, Dispatcher], None] | None = None,
) -> int:
    """Run the pipeline until ``stop`` is set (or a signal arrives). Returns an exit code.

    ``on_started`` receives the ingest and the dispatcher once both listen (tests look
    inside them to check that nothing leaks).
    """
    stop = stop or asyncio.Event()
    stop_on_signals(stop)

    ctx = zmq.asyncio.Context()
    # Bind everything before spawning anything: a busy port must fail fast, with no
    # worker processes to clean up.
    try:
        dispatcher = Dispatcher(ctx, config.dispatcher, JOBS_ENDPOINT, keys_dir=config.security.keys_dir)
    except PipelineError:  # a keys folder that is missing or unreadable
        ctx.destroy(linger=0)
        raise
    except zmq.ZMQError as exc:
        ctx.destroy(linger=0)
        raise PipelineError(f"cannot bind the worker endpoint {config.dispatcher.worker_endpoint} "
                            f"or the job endpoint {config.dispatcher.job_endpoint}: {exc}") from None
    ingest = Ingest(config, ctx, JOBS_ENDPOINT, _vad_factory(config), lambda: dispatcher.ready_workers)
    metrics = Metrics()
    ingest.metrics = dispatcher.metrics = metrics
    metrics.on_scrape(dispatcher.refresh_metrics)
    metrics.on_scrape(lambda: metrics.sessions.set(len(ingest.connections)))
    try:
        await ingest.start()
    except PipelineError:  # TLS files that do not load
        dispatcher.close()
        ctx.destroy(linger=0)
        raise
    except OSError as exc:
        dispatcher.close()
        ctx.destroy(linger=0)
        raise PipelineError(
            f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror or exc}") from None
    count = config.workers.resolved_count()
    supervisor = Supervisor(config, local_endpoint(dispatcher.worker_endpoint), count)
    dispatcher.on_hung = supervisor.kill_hung
    supervisor.start()
    if on_started is not None:
        on_started(ingest, dispatcher)
    host = config.server.host
    scheme = "wss" if config.security.tls_cert else "ws"
    url = f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{ingest.port}{STREAM_PATH}"
    announce(f"pipeline: listening on {url}")
    announce(f"pipeline: workers connect to {dispatcher.worker_endpoint}; starting {count} local worker(s)")
    if dispatcher.job_endpoint:
        announce(f"pipeline: batch jobs on {dispatcher.job_endpoint}")
    tasks = [
        asyncio.create_task(dispatcher.run(), name="dispatcher"),
        asyncio.create_task(ingest.gateway(), name="gateway"),
        asyncio.create_task(supervisor.watch(), name="supervisor"),
    ]
    started = time.monotonic()
    announced_ready = False
    code = 0
    try:
        while not stop.is_set():
            if not announced_ready and dispatcher.ready_workers >= max(1, count):
                announced_ready = True
                announce(f"pipeline: ready, {dispatcher.ready_workers} worker(s) in {time.monotonic() - started:.1f} s")
            if not announced_ready and (why := supervisor.cannot_start()):
                log.error(why)
                announce(f"pipeline: error: {why}")
                code = 1
                break
            failed = [t for t in tasks if t.done()]
            if failed:
                log.error("%s stopped unexpectedly: %r", failed[0].get_name(), failed[0].exception())
                code = 1
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.2)
    finally:
        announce("pipeline: shutting down")
        unfinished = await ingest.drain(config.server.shutdown_timeout_s)
        if unfinished:
            log.warning("%d session(s) still had outstanding finals at the deadline", unfinished)
            code = code or 1
        await supervisor.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        dispatcher.close()
        ctx.term()
        announce(f"pipeline: stopped; {dispatcher.summary()}")
    return code


@contextlib.asynccontextmanager
async def local_pool(config: Config, ctx: zmq.asyncio.Context, client_endpoint: str,
                     ready_timeout_s: float = 300.0) -> AsyncIterator[Dispatcher]:
    """A dispatcher and its worker processes, without the ingest: for ``pipeline transcribe``.

    Workers connect over loopback on a free port. Yields once every worker is ready;
    stops them all on the way out, whatever happened.

    Raises:
        PipelineError: no worker could start, or not all were ready in time.
    """
    dcfg = dataclasses.replace(config.dispatcher, worker_endpoint="tcp://127.0.0.1:*", job_endpoint="")
    dispatcher = Dispatcher(ctx, dcfg, client_endpoint, keys_dir=config.security.keys_dir)
    count = max(1, config.workers.resolved_count())
    supervisor = Supervisor(config, local_endpoint(dispatcher.worker_endpoint), count, logging.WARNING)
    dispatcher.on_hung = supervisor.kill_hung
    supervisor.start()
    tasks = [asyncio.create_task(dispatcher.run(), name="dispatcher"),
             asyncio.create_task(supervisor.watch(), name="supervisor")]
    try:
        deadline = time.monotonic() + ready_timeout_s
        while dispatcher.ready_workers < count:
            if why := supervisor.cannot_start():
                raise PipelineError(why)
            if time.monotonic() > deadline:
                raise PipelineError(f"only {dispatcher.ready_workers} of {count} workers were ready "
                                    f"after {ready_timeout_s:.0f} s")
            await asyncio.sleep(0.05)
        yield dispatcher
    finally:
        await supervisor.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        dispatcher.close()


async def serve_workers(config: Config, endpoint: str, stop: asyncio.Event | None = None,
                        announce: Callable[[str], None] = print) -> int:
    """``pipeline worker``: keep ``workers.count`` processes connected to a remote dispatcher."""
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    count = max(1, config.workers.resolved_count())
    supervisor = Supervisor(config, endpoint, count)
    supervisor.start()
    watcher = asyncio.create_task(supervisor.watch())
    announce(f"pipeline worker: {count} process(es) joining {endpoint}"
             + (" with CurveZMQ key " + repr(config.security.worker_key) if config.security.keys_dir else ""))
    code = 0
    try:
        while not stop.is_set():
            if why := supervisor.cannot_start():
                announce(f"pipeline worker: error: {why}")
                code = 1
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
    finally:
        await supervisor.stop()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        announce("pipeline worker: stopped")
    return code


def run_workers(config: Config, endpoint: str) -> int:
    from .logs import setup

    setup(config.security.log_format)
    return asyncio.run(serve_workers(config, endpoint, announce=lambda line: print(line, flush=True)))


def run(config: Config) -> int:
    from .logs import setup

    setup(config.security.log_format)
    try:
        return asyncio.run(serve(config, announce=lambda line: print(line, flush=True)))
    except PipelineError as exc:
        print(f"pipeline: error: {exc}", file=sys.stderr, flush=True)
        return 1
