"""Per-connection limits: audio rate, session length, idle time. No I/O; time is passed in.

The ingest asks after every frame (:meth:`ConnectionLimits.on_audio`) and whenever the
client has sent no audio for a while (:meth:`ConnectionLimits.idle`); a :class:`Violation`
says what to tell the client and how to close (docs/protocol.md, "Errors").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ServerConfig
from .protocol import FORMATS, MIN_SAMPLE_RATE
from .realtime_events import INPUT_FORMATS

#: WebSocket close code for a policy violation (RFC 6455, 7.4.1).
POLICY_VIOLATION = 1008


def densest_bytes_per_s() -> float:
    """The fewest message bytes that carry one second of audio, in any format either endpoint takes.

    Today that is PCM16 at 8 kHz on ``/v1/stream``: 16,000 bytes a second (a
    ``/v1/realtime`` append is base64 PCM16 at 24 kHz: 64,000). A format added to
    either table is counted here, and the config check below follows.
    """
    stream = min(FORMATS.values()) * MIN_SAMPLE_RATE
    realtime = min(FORMATS[f.codec] * f.rate * 4 / 3 for f in INPUT_FORMATS)  # base64: 4 chars per 3 bytes
    return min(stream, realtime)


def max_message_audio_s(max_message_bytes: int) -> float:
    """The most audio one message of ``max_message_bytes`` can hold, in seconds.

    The rate limit's burst must hold at least this much (``pipeline.config.validate``):
    otherwise a single legal message, such as a backlog sent after a reconnect, would
    be refused on a fresh connection, which is what the burst is for.
    """
    return max_message_bytes / densest_bytes_per_s()


@dataclass(frozen=True)
class Violation:
    """A limit was passed: send an ``error`` with ``code``, then close with ``close_code``.

    ``flush``: finish the finals of audio already received first (a normal end, such as
    the session-length limit); otherwise close at once (abuse, such as flooding).
    """

    code: str
    message: str
    flush: bool
    close_code: int = POLICY_VIOLATION


class ConnectionLimits:
    """Tracks one connection against ``server`` limits.

    The audio rate is a token bucket: it holds up to ``audio_burst_s`` seconds of audio
    and refills at ``max_audio_rate`` seconds of audio per second, so a client can send a
    backlog at once but not stream faster than the rate for long.
    """

    def __init__(self, server: ServerConfig, now: float) -> None:
        self.rate = server.max_audio_rate
        self.burst_s = server.audio_burst_s
        self.max_session_s = server.max_session_s
        self.idle_timeout_s = server.idle_timeout_s
        self.tokens_s = server.audio_burst_s
        self.audio_s = 0.0
        self.last_seen = now  # of audio, or of the server owing the client something
        self._refilled = now

    def on_message(self, now: float) -> None:
        """The client is not idle now: the server still owes it finals."""
        self.last_seen = now

    def on_audio(self, seconds: float, now: float) -> Violation | None:
        """A message brought ``seconds`` of audio at ``now`` (0 for one that brought none).

        Only audio resets the idle clock: a client that sends nothing but pings (or other
        text) would otherwise hold a session slot forever.
        """
        if seconds > 0:
            self.last_seen = now
        self.audio_s += seconds
        if self.max_session_s and self.audio_s > self.max_session_s:
            return Violation("session_limit", f"this connection streamed the maximum of {self.max_session_s:g} s "
                                              "of audio; open a new one to go on", flush=True)
        if self.rate:
            self.tokens_s = min(self.burst_s, self.tokens_s + (now - self._refilled) * self.rate)
            self._refilled = now
            self.tokens_s -= seconds
            if self.tokens_s < 0:
                return Violation("rate_limited", f"audio is arriving faster than {self.rate:g}x real time "
                                                 f"(after a burst of {self.burst_s:g} s)", flush=False)
        return None

    def idle(self, now: float) -> Violation | None:
        """Whether the client has sent no audio for too long (the caller checks nothing is outstanding)."""
        if self.idle_timeout_s and now - self.last_seen >= self.idle_timeout_s:
            return Violation("idle_timeout", f"no audio received for {self.idle_timeout_s:g} s", flush=False)
        return None

    def idle_wait(self, now: float) -> float | None:
        """How long the ingest may wait for the next message before checking :meth:`idle`.

        Messages without audio come back here with less to wait each time, so pings
        cannot push the check back.
        """
        if not self.idle_timeout_s:
            return None
        return max(0.0, self.last_seen + self.idle_timeout_s - now)
