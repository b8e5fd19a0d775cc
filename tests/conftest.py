"""Fixtures: a real pipeline (real sockets, real worker processes) in a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import psutil
import pytest

from pipeline.config import Config, DispatcherConfig, ServerConfig, WorkersConfig
from tests.helpers import timeout


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class ThreadedPipeline:
    """``pipeline.service.serve`` on its own event loop thread, for integration tests."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.lines: list[str] = []
        self.url = ""
        self.exit_code: int | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._ready = threading.Event()
        self.worker_pids: list[int] = []
        self.ingest = None  # the live objects, to check that nothing leaks
        self.dispatcher = None

    def _announce(self, line: str) -> None:
        self.lines.append(line)
        if "listening on " in line:
            self.url = line.split("listening on ", 1)[1].strip()
        if "pipeline: ready" in line:
            self._ready.set()

    def _run(self) -> None:
        from pipeline import service

        async def main() -> int:
            self._stop = asyncio.Event()
            def started(ingest, dispatcher) -> None:
                self.ingest, self.dispatcher = ingest, dispatcher

            return await service.serve(self.config, self._stop, announce=self._announce, on_started=started)

        self.exit_code = self._loop.run_until_complete(main())

    def start(self) -> ThreadedPipeline:
        self._thread.start()
        if not self._ready.wait(timeout(60)):
            self.stop()
            raise RuntimeError(f"pipeline did not become ready: {self.lines}")
        # Our children, less multiprocessing's resource tracker (it lives as long as we do).
        self.worker_pids = [c.pid for c in psutil.Process().children(recursive=True)
                            if "resource_tracker" not in " ".join(c.cmdline())]
        return self

    @property
    def http_base(self) -> str:
        return self.url.replace("ws://", "http://").rsplit("/v1/", 1)[0]

    def stop(self) -> int | None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout(30))
        return self.exit_code


def fake_config(**workers) -> Config:
    return Config(
        server=ServerConfig(port=0, max_sessions=4, shutdown_timeout_s=5.0),
        dispatcher=DispatcherConfig(worker_endpoint="tcp://127.0.0.1:*", job_endpoint="", heartbeat_interval_s=0.25),
        workers=replace(WorkersConfig(model="fake", count=2, fake_delay_ms=20), **workers),
    )


@pytest.fixture
def pipeline_factory() -> Iterator:
    """Start pipelines with a given config; on teardown stop them and check for leaks."""
    started: list[ThreadedPipeline] = []

    def factory(config: Config | None = None) -> ThreadedPipeline:
        p = ThreadedPipeline(config or fake_config()).start()
        started.append(p)
        return p

    yield factory
    for p in started:
        p.stop()
        deadline = time.monotonic() + timeout(10)
        while time.monotonic() < deadline and any(map(running, p.worker_pids)):
            time.sleep(0.05)
        alive = [pid for pid in p.worker_pids if running(pid)]
        assert not alive, f"worker processes left behind: {alive}"


@pytest.fixture
def fake_pipeline(pipeline_factory) -> ThreadedPipeline:
    return pipeline_factory()
