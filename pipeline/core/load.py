"""How much of the worker pool the live streams use, measured, for admission (issue 14).

A fixed session cap is wrong both ways: a stream of continuous speech costs far more
than a phone line that is mostly silence, and remote workers joining or leaving change
what the pool can carry at run time. So the ingest measures what matters:

* the workers' time spent on **finals**, per second of session time: what one stream
  costs. Partials are not counted: they are elastic, they fill the time finals leave
  and thin out under load (docs/performance.md);
* the age of the oldest final still outstanding: whether finals are falling behind now.

A new stream is admitted if the pool would still be at most ``target`` busy with
finals once it came, at the measured cost per stream, and no final is late. The cost
per stream starts at a prior and moves to the measurement as session time accrues.
Nothing here does I/O; time is passed in.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from .admission import Refusal

#: Session-seconds of evidence the prior is worth: the measured cost takes over after
#: a minute of one stream, or four seconds of sixteen.
PRIOR_WEIGHT_S = 60.0
#: Until this much session time is measured, a stream costs at least the prior: young
#: streams have not finished an utterance yet, and a burst of arrivals would otherwise
#: look cheap (16 offered in 30 s, 11 admitted where 8 held).
PRIOR_FLOOR_S = 300.0


@dataclass(frozen=True)
class LoadView:
    """What the ingest knows at a handshake."""

    workers: int  # ready workers, each one decode at a time
    sessions: int  # open live sessions
    oldest_final_s: float  # age of the oldest final job not yet answered (0: none)


class PoolLoad:
    """Finals' worker time per session-second over a sliding window.

    Args:
        target: the share of the pool's time finals may take, once a new stream is in.
        per_stream_s: the prior cost of one stream, in worker-seconds per second.
        late_final_s: an outstanding final older than this means finals are behind.
        window_s: how far back the measurement looks.
    """

    def __init__(self, target: float, per_stream_s: float, late_final_s: float, window_s: float = 60.0) -> None:
        self.target = target
        self.prior = per_stream_s
        self.late_final_s = late_final_s
        self.window_s = window_s
        self._finals: collections.deque[tuple[float, float]] = collections.deque()  # (when, decode seconds)
        self._busy = 0.0
        self._changes: collections.deque[tuple[float, int]] = collections.deque()  # (when, sessions from then)
        self._sessions = 0

    def final_done(self, decode_s: float, now: float) -> None:
        self._finals.append((now, decode_s))
        self._busy += decode_s
        self._trim(now)

    def sessions_changed(self, sessions: int, now: float) -> None:
        self._changes.append((now, sessions))
        self._sessions = sessions
        self._trim(now)

    def per_stream(self, now: float) -> float:
        """Worker-seconds of finals per second of one session, shrunk towards the prior."""
        self._trim(now)
        seen = self._session_seconds(now)
        cost = (self._busy + self.prior * PRIOR_WEIGHT_S) / (seen + PRIOR_WEIGHT_S)
        return max(cost, self.prior) if seen < PRIOR_FLOOR_S else cost

    def refusal(self, view: LoadView, now: float) -> Refusal | None:
        """A 503 if one more stream would overload the pool, or finals are late already."""
        if view.workers <= 0:
            return None  # readiness, not load: /readyz says so, and jobs wait for workers
        if view.oldest_final_s > self.late_final_s:
            return Refusal(503, "overloaded", f"server overloaded: finals are {view.oldest_final_s:.1f} s behind; "
                                              "try again later\n", retry_after_s=5)
        cost = self.per_stream(now)
        if (view.sessions + 1) * cost > self.target * view.workers:
            return Refusal(503, "at_capacity", f"server at capacity: {view.sessions} stream(s) use "
                                               f"{100 * view.sessions * cost / view.workers:.0f} % of "
                                               f"{view.workers} worker(s); try again later\n", retry_after_s=5)
        return None

    def _session_seconds(self, now: float) -> float:
        """The integral of the session count over the window (0 before the first change)."""
        start, total = now - self.window_s, 0.0
        points = list(self._changes)
        for i, (when, count) in enumerate(points):
            end = points[i + 1][0] if i + 1 < len(points) else now
            total += count * max(0.0, end - max(when, start))
        return total

    def _trim(self, now: float) -> None:
        start = now - self.window_s
        while self._finals and self._finals[0][0] < start:
            self._busy -= self._finals.popleft()[1]
        # Keep one change at or before the window's start: it says the count then.
        while len(self._changes) > 1 and self._changes[1][0] <= start:
            self._changes.popleft()
