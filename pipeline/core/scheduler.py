"""The dispatcher's state machine: queues, ready workers, jobs in flight, liveness.

It follows the Paranoid Pirate pattern of the ZeroMQ Guide: workers announce READY, the
broker hands work to the least recently used ready worker, and a worker that is silent
for ``liveness`` heartbeat intervals is declared dead. What that pattern leaves out is
added here: priority classes (finals before partials before batch work), coalescing of
queued jobs that share a key, and re-dispatch of a dead worker's job with a fresh attempt
number so that a late answer from the old attempt is recognised and dropped.

Nothing here touches a socket or a clock: the I/O layer passes ``now`` in and sends what
:meth:`Scheduler.assignments` returns.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from .wire import Job, Priority


@dataclass
class WorkerState:
    """What the broker knows about one worker."""

    identity: bytes
    expires_at: float
    job: Job | None = None
    client: bytes = b""
    started_at: float = 0.0  # when its job was handed to it
    info: dict[str, object] = field(default_factory=dict)


@dataclass
class Failure:
    """A job that will not be completed, and why; the I/O layer tells its client."""

    client: bytes
    job: Job
    reason: str


class Scheduler:
    """Hands queued jobs to ready workers.

    Args:
        heartbeat_interval_s: how often peers are expected to be heard from.
        liveness: missed intervals after which a worker is dead.
        max_attempts: dispatches of one job before it is failed.
        max_queued: jobs that may wait; beyond this :meth:`submit` refuses.
        live_reserve_s: for this long after the last live (final or partial) job, batch
            work leaves one ready worker free, so that a live final does not wait for a
            batch decode to finish (a batch chunk takes a second or more).
        partial_reserve: ready workers that partials leave free for finals, when there
            are more workers than this: a final then never waits for a partial to end.
    """

    def __init__(
        self,
        heartbeat_interval_s: float = 1.0,
        liveness: int = 3,
        max_attempts: int = 3,
        max_queued: int = 10000,
        live_reserve_s: float = 10.0,
        partial_reserve: int = 0,
    ) -> None:
        self.expiry_s = heartbeat_interval_s * liveness
        self.max_attempts = max_attempts
        self.max_queued = max_queued
        self.workers: dict[bytes, WorkerState] = {}
        self.ready: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self.queues: dict[Priority, collections.OrderedDict[str, tuple[bytes, Job]]] = {
            p: collections.OrderedDict() for p in Priority
        }
        self.live_reserve_s = live_reserve_s
        self.partial_reserve = partial_reserve
        self.live_at = float("-inf")  # when the last live job was submitted
        self.failures: list[Failure] = []
        self.replaced = 0
        self.retried = 0
        self.cancelled = 0

    # -- workers -----------------------------------------------------------------

    def worker_ready(self, identity: bytes, now: float, info: dict[str, object] | None = None) -> list[bytes]:
        """A worker said READY, or finished a job: it goes to the back of the LRU queue.

        A worker counts once, by the process slot it fills (``info``, see :func:`slot_of`):
        a READY from a new identity in a known slot means that slot's process restarted,
        or reconnected with a fresh socket, and its old identity is forgotten at once
        instead of counting until its heartbeats expire.

        Returns:
            The identities forgotten in favour of this one (their jobs are queued again).
        """
        replaced: list[bytes] = []
        worker = self.workers.get(identity)
        if worker is None:
            slot = slot_of(info or {})
            replaced = [w.identity for w in self.workers.values() if slot is not None and slot_of(w.info) == slot]
            for old in replaced:
                self.worker_gone(old, "worker restarted")
            worker = self.workers[identity] = WorkerState(identity, now + self.expiry_s, info=info or {})
        elif worker.job is not None:
            # READY while holding a job means the worker restarted and forgot it.
            self._requeue(worker, "worker restarted")
        worker.expires_at = now + self.expiry_s
        self.ready[identity] = None
        self.ready.move_to_end(identity)
        return replaced

    def worker_seen(self, identity: bytes, now: float) -> bool:
        """Any message from a worker proves it alive. Returns False if it is unknown."""
        worker = self.workers.get(identity)
        if worker is None:
            return False
        worker.expires_at = now + self.expiry_s
        return True

    def worker_gone(self, identity: bytes, reason: str = "worker disconnected", delivered: bool = True) -> bool:
        """Forget a worker; its job, if any, is queued again, first in its class.

        ``delivered=False``: the job was never handed over (sending it failed), so this
        dispatch does not count against its ``max_attempts``.

        Returns:
            Whether the worker was known.
        """
        worker = self.workers.pop(identity, None)
        self.ready.pop(identity, None)
        if worker is not None and worker.job is not None:
            if not delivered:
                worker.job.attempt -= 1
            self._requeue(worker, reason)
        return worker is not None

    def expire(self, now: float) -> list[bytes]:
        """Declare dead every worker not heard from in time; returns their identities."""
        dead = [w.identity for w in self.workers.values() if w.expires_at <= now]
        for identity in dead:
            self.worker_gone(identity, "worker stopped answering")
        return dead

    # -- jobs --------------------------------------------------------------------

    def submit(self, client: bytes, job: Job, now: float | None = None) -> bool:
        """Queue a job. A queued job with the same key is replaced in place.

        ``now`` (any monotonic clock) marks live traffic for the batch reserve.

        Returns:
            False if the queue is full and the job was refused.
        """
        queue = self.queues[job.priority]
        slot = _slot(job)
        if now is not None:
            job.queued_at = now
            if job.priority != Priority.BATCH:
                self.live_at = now
        if job.priority == Priority.FINAL and job.key:
            # The final covers all of the utterance: a queued partial of it is moot.
            if self.queues[Priority.PARTIAL].pop(job.key, None) is not None:
                self.replaced += 1
        if slot in queue:
            self.replaced += 1
            queue[slot] = (client, job)  # keeps its place in line, carries the newer audio
            return True
        if self.queued() >= self.max_queued:
            return False
        queue[slot] = (client, job)
        return True

    def cancel(self, client: bytes, prefix: str) -> int:
        """Drop ``client``'s queued jobs whose id starts with ``prefix`` (its session ended).

        Jobs already running are left to finish; their answers find no session and are
        dropped. Returns how many were dropped.
        """
        if not prefix:
            return 0
        dropped = 0
        for queue in self.queues.values():
            for slot, (owner, job) in list(queue.items()):
                if owner == client and job.job_id.startswith(prefix):
                    del queue[slot]
                    dropped += 1
        self.cancelled += dropped
        return dropped

    def result(self, identity: bytes, job_id: str, attempt: int) -> tuple[bytes, Job] | None:
        """A worker answered. Returns (client, job), or None if the answer is stale."""
        worker = self.workers.get(identity)
        if worker is None or worker.job is None:
            return None
        job = worker.job
        if job.job_id != job_id or job.attempt != attempt:
            return None
        client = worker.client
        worker.job = None
        worker.client = b""
        return client, job

    def assignments(self, now: float | None = None) -> list[tuple[bytes, bytes, Job]]:
        """Pair queued jobs with ready workers, best priority first.

        Returns:
            (worker identity, client identity, job) for each job to send now.
        """
        out: list[tuple[bytes, bytes, Job]] = []
        live = now is not None and now - self.live_at < self.live_reserve_s
        while self.ready:
            if (live and len(self.ready) == 1 and len(self.workers) > 1
                    and not self.queues[Priority.FINAL] and not self.queues[Priority.PARTIAL]):
                break  # the last ready worker stays free for live streams
            if (not self.queues[Priority.FINAL] and len(self.workers) > self.partial_reserve
                    and len(self.ready) <= self.partial_reserve):
                break  # partials and batch work leave the reserve free for the next final
            picked = self._pop_next()
            if picked is None:
                break
            client, job = picked
            identity, _ = self.ready.popitem(last=False)  # least recently used
            worker = self.workers[identity]
            job.attempt += 1
            worker.job, worker.client = job, client
            worker.started_at = now if now is not None else 0.0
            out.append((identity, client, job))
        return out

    def overdue(self, now: float, deadline_s: float) -> list[WorkerState]:
        """Workers whose job has run longer than ``deadline_s``: hung, or far too slow.

        The caller forgets them (:meth:`worker_gone`, which queues the job again) and has
        the process killed if it can; a heartbeat alone does not prove a worker is useful,
        since heartbeats come from a thread of their own.
        """
        if deadline_s <= 0:
            return []
        return [w for w in self.workers.values() if w.job is not None and now - w.started_at > deadline_s]

    def expire_queued(self, now: float, deadline_s: float) -> int:
        """Fail live jobs that no worker took within ``deadline_s`` (all workers dead or
        stuck): their clients get an error instead of waiting forever. Batch jobs wait on;
        their clients have deadlines of their own. Returns how many expired."""
        if deadline_s <= 0:
            return 0
        expired = 0
        for priority in (Priority.FINAL, Priority.PARTIAL):
            queue = self.queues[priority]
            for slot, (client, job) in list(queue.items()):
                if job.queued_at and now - job.queued_at > deadline_s:
                    del queue[slot]
                    self.failures.append(Failure(client, job, f"no worker took the job within {deadline_s:g} s"))
                    expired += 1
        return expired

    def take_failures(self) -> list[Failure]:
        failures, self.failures = self.failures, []
        return failures

    def queued(self, priority: Priority | None = None) -> int:
        if priority is not None:
            return len(self.queues[priority])
        return sum(len(q) for q in self.queues.values())

    def in_flight(self) -> int:
        return sum(1 for w in self.workers.values() if w.job is not None)

    def _pop_next(self) -> tuple[bytes, Job] | None:
        for priority in Priority:
            queue = self.queues[priority]
            if queue:
                _, item = queue.popitem(last=False)
                return item
        return None

    def _requeue(self, worker: WorkerState, reason: str) -> None:
        job, client = worker.job, worker.client
        worker.job, worker.client = None, b""
        assert job is not None
        if job.attempt >= self.max_attempts:
            self.failures.append(Failure(client, job, f"{reason}; gave up after {job.attempt} attempts"))
            return
        self.retried += 1
        job.queued_at = worker.started_at or job.queued_at  # it waits again from when it was lost
        queue = self.queues[job.priority]
        slot = _slot(job)
        if slot in queue:
            return  # a newer job with the same key is already waiting; it supersedes this one
        queue[slot] = (client, job)
        queue.move_to_end(slot, last=False)  # it has waited longest: first in its class


def slot_of(info: dict[str, object]) -> tuple[object, ...] | None:
    """The process slot a worker's READY ``info`` names, or None if it names none.

    Workers started by a supervisor send ``slot``: unique to the supervisor's run and the
    process's place in it, the same across that place's restarts and reconnections.
    Others are told apart by ``name`` and ``pid``: one process, however often it reconnects.
    """
    if info.get("slot"):
        return ("slot", info["slot"])
    if info.get("name") is not None and info.get("pid") is not None:
        return ("pid", info["name"], info["pid"])
    return None


def _slot(job: Job) -> str:
    """Queue slot of a job: partials of one utterance share a slot, so the newest wins."""
    return job.key if job.priority == Priority.PARTIAL and job.key else job.job_id
