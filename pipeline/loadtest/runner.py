"""Drives the load: N staggered clients streaming corpus files at real-time pace.

Everything here is bounded: clients stop when ``duration_s`` is up (or after one file each
without it), every stream has a timeout, and the whole run has a hard deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from websockets.exceptions import InvalidStatus

from ..client import StreamClient, load_audio
from ..config import SAMPLE_RATE
from .corpus import Item
from .metrics import Pass

#: Seconds a stream may take past its audio before it counts as hung.
STREAM_GRACE_S = 60.0


async def run_clients(
    url: str,
    items: list[Item],
    audio: dict[Path, np.ndarray],
    clients: int,
    speed: float = 1.0,
    duration_s: float | None = None,
    stagger_s: float = 0.5,
    on_message: Callable[[int, dict[str, Any]], None] | None = None,
    start: dict[str, Any] | None = None,
) -> list[Pass]:
    """Run the clients; returns every stream pass they made."""
    passes: list[Pass] = []
    t0 = time.monotonic()
    deadline = t0 + duration_s if duration_s else None

    async def client(n: int) -> None:
        await asyncio.sleep(n * stagger_s)
        k = n  # clients start on different files
        try:
            async with StreamClient(url) as conn:
                while True:
                    item = items[k % len(items)]
                    k += 1
                    samples = audio[item.path]
                    if deadline is not None:
                        left_s = (deadline - time.monotonic()) * speed
                        if left_s < 1.0:
                            return
                        samples = samples[: int(left_s * SAMPLE_RATE)]
                    p = Pass(n, item)
                    passes.append(p)
                    result = await conn.send(
                        samples, speed=speed, start=start,
                        on_message=(lambda m: on_message(n, m)) if on_message is not None else None,
                        timeout_s=len(samples) / SAMPLE_RATE / speed + STREAM_GRACE_S,
                    )
                    p.sent, p.messages = result.sent, result.messages
                    if result.timed_out:
                        p.failure = f"client {n}: no 'stopped' within {STREAM_GRACE_S:.0f} s of the end of its audio"
                        return
                    if result.closed is not None:
                        p.failure = f"client {n}: server closed the connection ({result.closed[0]} {result.closed[1]})"
                        return
                    if deadline is None:
                        return  # one file per client
        except InvalidStatus as exc:
            response = exc.response
            if response.status_code == 503 and not any(p.client == n for p in passes):
                # Admission control said no at the handshake: counted apart, not a failure.
                reason = (response.body or b"").decode("utf-8", "replace").strip()
                passes.append(Pass(n, items[n % len(items)], refused=f"client {n}: 503 {reason}"))
            else:
                passes.append(Pass(n, items[n % len(items)], failure=f"client {n}: {type(exc).__name__}: {exc}"))
        except Exception as exc:  # connection refused, handshake rejected, ...
            passes.append(Pass(n, items[n % len(items)], failure=f"client {n}: {type(exc).__name__}: {exc}"))

    await asyncio.gather(*(client(n) for n in range(clients)))
    return passes


def decode_corpus(items: list[Item]) -> dict[Path, np.ndarray]:
    """Decode every corpus file once, up front, so decoding never paces the clients."""
    return {item.path: load_audio(str(item.path)) for item in items}


class Resources:
    """Samples CPU % and RSS of the server process and its children (the workers)."""

    def __init__(self, pid: int | None) -> None:
        import psutil

        self.psutil = psutil
        self.pid = pid
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self._procs: dict[int, Any] = {}

    async def sample_forever(self, interval_s: float = 0.5) -> None:
        if self.pid is None:
            return
        while True:
            self.sample()
            await asyncio.sleep(interval_s)

    def sample(self) -> None:
        ps = self.psutil
        try:
            root = ps.Process(self.pid)
            procs = [("ingest", root)] + [(f"worker pid {c.pid}", c) for c in root.children(recursive=True)
                                          if "resource_tracker" not in " ".join(c.cmdline())]
        except ps.Error:
            return
        for name, proc in procs:
            cached = self._procs.setdefault(proc.pid, proc)
            try:
                cpu = cached.cpu_percent(None)
                rss = cached.memory_info().rss / 2**20
            except ps.Error:
                continue
            self.samples.setdefault(name, []).append((cpu, rss))

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"cpu_percent": None, "rss_mb": None}
        cpu: dict[str, Any] = {}
        rss: dict[str, Any] = {}
        for name, values in self.samples.items():
            cpus = [c for c, _ in values[1:]] or [0.0]  # psutil's first reading is always 0
            cpu[name] = {"mean": round(float(np.mean(cpus)), 1), "max": round(float(np.max(cpus)), 1)}
            rss[name] = {"max": round(max(r for _, r in values), 1), "last": round(values[-1][1], 1)}
        workers = [v["mean"] for k, v in cpu.items() if k != "ingest"]
        cpu["workers_total_mean"] = round(float(sum(workers)), 1)
        return {"cpu_percent": cpu, "rss_mb": rss}


class SpawnedPipeline:
    """``pipeline run`` on free ports, as a subprocess: for ``--spawn``, benchmarks and tests.

    Args:
        config: a config file, or None for the defaults.
        log_path: where its stderr (the log) goes.
        ready_timeout_s: how long to wait for ``pipeline: ready``.
        args: more ``pipeline run`` flags.
        wait_ready: False to return once it listens (with ``--workers 0`` it is ready only
            when a remote worker joins).
    """

    def __init__(self, config: str | None, log_path: Path, ready_timeout_s: float = 180.0,
                 args: Sequence[str] = (), wait_ready: bool = True) -> None:
        cmd = [sys.executable, "-m", "pipeline", "run", "--port", "0", "--worker-endpoint", "tcp://127.0.0.1:*",
               "--job-endpoint", "tcp://127.0.0.1:*", *args]
        if config:
            cmd += ["--config", config]
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.url = ""
        self.job_endpoint = ""  # for `pipeline transcribe --connect`
        self.worker_endpoint = ""  # for `pipeline worker --connect`
        self.tail = ""
        deadline = time.monotonic() + ready_timeout_s
        assert self.proc.stdout is not None
        started = False
        for line in self.proc.stdout:
            if m := re.search(r"listening on (\S+)", line):
                self.url = m.group(1)
            if m := re.search(r"batch jobs on (\S+)", line):
                self.job_endpoint = m.group(1)
            if m := re.search(r"workers connect to ([^;\s]+)", line):
                self.worker_endpoint = m.group(1)
            started = "pipeline: ready" in line or (not wait_ready and bool(self.worker_endpoint))
            if started or time.monotonic() > deadline:
                break
        if not self.url or self.proc.poll() is not None or not started:
            self.stop()
            raise RuntimeError(f"the spawned pipeline did not start; see {log_path}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        """The end of its log."""
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM it and wait; what it printed after ``ready`` is kept in :attr:`tail`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        assert self.proc.stdout is not None
        self.tail = self.proc.stdout.read()
        self.log.close()
        return self.proc.returncode
