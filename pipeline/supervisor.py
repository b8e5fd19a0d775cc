"""Starts the local worker processes, restarts the ones that die, and stops them all.

Workers are spawned (never forked: a forked copy of a process holding ZeroMQ contexts and
an event loop is unsafe), as uvicorn's multiprocess supervisor does. A worker that exits
on its own is replaced after a backoff that doubles with each quick death, so a worker
that cannot start (a bad model path, say) does not spin.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import secrets
import signal
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from .config import Config

log = logging.getLogger("pipeline.supervisor")

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
#: A worker that lived this long is considered to have started fine.
HEALTHY_AFTER_S = 60.0


@dataclass
class _Slot:
    name: str
    process: BaseProcess | None = None
    started_at: float = 0.0
    backoff_s: float = BACKOFF_MIN_S
    restart_at: float = 0.0
    early_exits: int = 0  # exits in a row soon after starting (it cannot even start)
    last_exit: int | None = None


class Supervisor:
    """Keeps ``count`` worker processes alive.

    Args:
        config: the pipeline config, passed whole to each worker.
        endpoint: the dispatcher's worker endpoint the workers connect to.
        count: how many processes to keep.
        log_level: the workers' logging level.
    """

    def __init__(self, config: Config, endpoint: str, count: int, log_level: int = logging.INFO) -> None:
        self.config = config
        self.log_level = log_level
        self.endpoint = endpoint
        self.ctx = multiprocessing.get_context("spawn")
        self.slots = [_Slot(f"worker-{i}") for i in range(count)]
        # Names the slots of this run for the dispatcher, which counts one worker per slot
        # (a restarted process replaces the old one) even across hosts with the same names.
        self.run_id = secrets.token_hex(6)
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None and s.process.pid is not None]

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        from workers.worker import main

        slot.process = self.ctx.Process(
            target=main, name=slot.name, daemon=False,
            args=(self.endpoint, self.config, slot.name, os.getpid(), self.log_level, f"{self.run_id}/{slot.name}"),
        )
        slot.process.start()
        slot.started_at = time.monotonic()
        log.info("started %s (pid %s)", slot.name, slot.process.pid)

    def kill_hung(self, info: dict[str, object]) -> bool:
        """SIGKILL one of our workers, by the pid in its READY ``info``; :meth:`watch` replaces it.

        The dispatcher's hook for a job past its deadline. Only a process this supervisor
        started is touched: a remote worker's pid means nothing here.
        """
        pid = info.get("pid")
        for slot in self.slots:
            if slot.process is not None and slot.process.pid == pid and slot.process.is_alive():
                log.error("killing %s (pid %s): its job ran past the deadline", slot.name, pid)
                slot.process.kill()
                return True
        return False

    async def watch(self, interval_s: float = 0.2) -> None:
        """Restart workers that exited, until :meth:`stop`."""
        while not self._stopping:
            now = time.monotonic()
            for slot in self.slots:
                proc = slot.process
                if proc is not None and not proc.is_alive():
                    proc.join(0)
                    lived = now - slot.started_at
                    slot.backoff_s = BACKOFF_MIN_S if lived > HEALTHY_AFTER_S else min(slot.backoff_s * 2, BACKOFF_MAX_S)
                    slot.restart_at = now + slot.backoff_s
                    slot.early_exits = slot.early_exits + 1 if lived < HEALTHY_AFTER_S else 0
                    slot.last_exit = proc.exitcode
                    log.warning("%s (pid %s) exited with code %s after %.1f s; restarting in %.1f s",
                                slot.name, proc.pid, proc.exitcode, lived, slot.backoff_s)
                    proc.close()
                    slot.process = None
                if slot.process is None and now >= slot.restart_at and not self._stopping:
                    self._spawn(slot)
            await asyncio.sleep(interval_s)

    def cannot_start(self, attempts: int = 3) -> str | None:
        """Why no worker can start, if every one has died ``attempts`` times in a row early.

        Only meaningful before any worker was ever ready: then it is the setup (a broken
        model folder, an unsupported compute type) and restarting will not help.
        """
        if self.slots and all(slot.early_exits >= attempts for slot in self.slots):
            codes = sorted({str(slot.last_exit) for slot in self.slots})
            return (f"no worker could start: each exited {attempts} times in a row soon after starting "
                    f"(exit code {', '.join(codes)}); the workers' errors are in the log above")
        return None

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every worker, wait up to ``timeout_s``, then SIGKILL what is left."""
        self._stopping = True
        procs = [s.process for s in self.slots if s.process is not None]
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        killed = 0
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                killed += 1
            proc.join(5)
        if killed:
            log.warning("killed %d worker(s) that did not stop within %.0f s", killed, timeout_s)
        for slot in self.slots:
            slot.process = None
