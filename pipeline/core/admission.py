"""Who may open a session, decided at the handshake, without I/O: session caps and wrong keys.

The ingest asks before it accepts a WebSocket handshake (docs/protocol.md, "At the
connection level") and tells this class when sessions open and close and when a key was
wrong. A :class:`Refusal` says which HTTP status to answer, with which body, and which
``reason`` label to count in ``stt_refused_handshakes_total``. Time is passed in; memory
is bounded whatever the number of addresses that try.
"""

from __future__ import annotations

import collections
import ipaddress
from dataclasses import dataclass

from ..config import SecurityConfig, ServerConfig

#: Addresses whose failed keys are remembered; the oldest are forgotten past this.
MAX_TRACKED_ADDRESSES = 10000
#: Each wrong key in a window delays its 401 by this much more, up to AUTH_DELAY_MAX_S.
AUTH_DELAY_STEP_S = 0.1
AUTH_DELAY_MAX_S = 1.0


@dataclass(frozen=True)
class Refusal:
    """Answer the handshake with HTTP ``status`` and ``message``; count it under ``reason``."""

    status: int
    reason: str
    message: str
    retry_after_s: int = 0


@dataclass
class _Failures:
    window_start: float
    count: int = 0


def address_key(host: str) -> str:
    """The unit that limits apply to: an IPv4 address, or an IPv6 address's /64.

    One IPv6 host usually holds a whole /64, and could otherwise take a new address for
    every attempt.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Admission:
    """Session counts by address, and wrong keys by address.

    Args:
        server: ``max_sessions`` and ``max_sessions_per_address`` (0: no cap per address).
        security: ``max_auth_failures`` per ``auth_failure_window_s`` (0: no lockout).
    """

    def __init__(self, server: ServerConfig, security: SecurityConfig) -> None:
        self.max_sessions = server.max_sessions
        self.max_per_address = server.max_sessions_per_address
        self.max_failures = security.max_auth_failures
        self.window_s = security.auth_failure_window_s
        self.sessions = 0
        self._open: dict[str, int] = {}
        self._failures: collections.OrderedDict[str, _Failures] = collections.OrderedDict()

    # -- sessions ------------------------------------------------------------------------

    def opened(self, host: str) -> None:
        key = address_key(host)
        self._open[key] = self._open.get(key, 0) + 1
        self.sessions += 1

    def closed(self, host: str) -> None:
        key = address_key(host)
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)
        self.sessions = max(0, self.sessions - 1)

    def capacity(self, host: str) -> Refusal | None:
        """A refusal if the server, or this client's address, has no session to spare."""
        if self.sessions >= self.max_sessions:
            return Refusal(503, "busy", f"server busy: all {self.max_sessions} sessions are in use; "
                                        "try again later\n")
        if self.max_per_address and self._open.get(address_key(host), 0) >= self.max_per_address:
            return Refusal(503, "per_address", f"too many sessions from your address: at most "
                                               f"{self.max_per_address} at once; close one and try again\n")
        return None

    # -- wrong keys ----------------------------------------------------------------------

    def locked_out(self, host: str, now: float) -> Refusal | None:
        """HTTP 429 while this address has had ``max_auth_failures`` wrong keys in the window."""
        failures = self._current(address_key(host), now)
        if failures is None or not self.max_failures or failures.count < self.max_failures:
            return None
        wait = max(1, int(failures.window_start + self.window_s - now + 0.999))
        return Refusal(429, "auth_lockout", f"too many wrong API keys from your address; try again in {wait} s\n",
                       retry_after_s=wait)

    def auth_failed(self, host: str, now: float) -> float:
        """Count a wrong or missing key. Returns how long to wait before answering 401.

        The wait grows with each failure in the window, so that guessing one key after
        another gets slower even before the lockout.
        """
        key = address_key(host)
        failures = self._current(key, now)
        if failures is None:
            if len(self._failures) >= MAX_TRACKED_ADDRESSES:
                self._failures.popitem(last=False)
            failures = self._failures[key] = _Failures(now)
        failures.count += 1
        self._failures.move_to_end(key)
        return min(AUTH_DELAY_STEP_S * failures.count, AUTH_DELAY_MAX_S)

    def auth_ok(self, host: str) -> None:
        """A right key: this address's failures are forgiven."""
        self._failures.pop(address_key(host), None)

    def _current(self, key: str, now: float) -> _Failures | None:
        failures = self._failures.get(key)
        if failures is not None and self.window_s and now - failures.window_start >= self.window_s:
            del self._failures[key]
            return None
        return failures
