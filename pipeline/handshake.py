"""The HTTP side of the WebSocket port: routes, refusals at the handshake, and their log lines.

``websockets`` calls :meth:`Handshake.process_request` with each parsed request; it serves
``/healthz``, ``/readyz``, ``/metrics`` and the browser page, and decides whether a stream
handshake goes on (docs/protocol.md, "At the connection level"): 405, 404, 429, 401, 503.
The decisions about sessions and keys are :class:`~pipeline.core.admission.Admission`'s.

Every refused or failed handshake is logged with the client's address, through a
:class:`~pipeline.logs.Throttle` so that a flood of them is a few lines and a count. A
request ``websockets`` cannot parse (garbage, a body, a chunked upload) never reaches a
hook and gets no response, only its log line: answering it would need another HTTP stack.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import http
import importlib.resources
import logging
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .core.admission import Refusal
from .logs import Throttle

if TYPE_CHECKING:
    from .ingest import Ingest

log = logging.getLogger("pipeline.ingest")

#: The browser page (pipeline/web), served as is: plain modules, no build, no CDN.
WEB_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
             "/app.js": ("app.js", "text/javascript; charset=utf-8"),
             "/worklet.js": ("worklet.js", "text/javascript; charset=utf-8")}
STREAM_PATH = "/v1/stream"
REALTIME_PATH = "/v1/realtime"  # OpenAI Realtime transcription protocol (docs/protocol.md)
#: The most of a request's path that is echoed in a 404 or written to the log.
PATH_CHARS = 64


def printable(text: str, limit: int = PATH_CHARS) -> str:
    """``text`` cut to ``limit`` characters of plain ASCII, for a response body or a log line."""
    cut = "".join(c if " " <= c < "\x7f" else "?" for c in text[:limit])
    return cut + ("..." if len(text) > limit else "")


def client_host(connection: ServerConnection) -> str:
    """The client's IP address (the first item of the socket's peer name)."""
    try:
        return str(connection.remote_address[0])
    except (TypeError, IndexError, OSError):
        return "unknown"


class Handshake:
    """The ``process_request`` and ``process_response`` hooks of one ingest, and its connection class."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.throttle = Throttle()

    # -- hooks -------------------------------------------------------------------------

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        ingest = self.ingest
        if request.method != "GET":  # websockets parses any method; a handshake is a GET
            response = connection.respond(http.HTTPStatus.METHOD_NOT_ALLOWED,
                                          f"method {printable(request.method, 16)} is not allowed here: use GET\n")
            response.headers["Allow"] = "GET"
            return response
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            n = ingest.ready()
            if n > 0 and ingest.accepting:
                return connection.respond(http.HTTPStatus.OK, f"ready: {n} worker(s)\n")
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "not ready: no worker is ready\n")
        if path in WEB_FILES:
            name, content_type = WEB_FILES[path]
            body = _web_file(name)
            return Response(200, "OK", Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                                                ("Cache-Control", "no-cache"), ("Connection", "close")]), body)
        if path == "/metrics" and ingest.metrics is not None:
            body, content_type = ingest.metrics.render()
            return Response(200, "OK", Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                                                ("Connection", "close")]), body)
        if path not in (STREAM_PATH, REALTIME_PATH):
            return connection.respond(http.HTTPStatus.NOT_FOUND, f"unknown path {printable(path)}; the stream "
                                                                 f"endpoints are {STREAM_PATH} and {REALTIME_PATH}\n")
        host, now = client_host(connection), time.monotonic()
        if ingest.api_keys:
            # Before any session state exists (docs/protocol.md, "Authentication").
            if refusal := ingest.admission.locked_out(host, now):
                return self._refuse(connection, refusal)
            if not self._authorized(request):
                await asyncio.sleep(ingest.admission.auth_failed(host, now))  # guessing keys gets slow
                refusal = Refusal(401, "unauthorized",
                                  "a valid API key is needed: Authorization: Bearer KEY, or ?token=KEY\n")
                response = self._refuse(connection, refusal)
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
            ingest.admission.auth_ok(host)
        if not ingest.accepting:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "the server is shutting down\n")
        if refusal := ingest.admission.capacity(host) or ingest.load_refusal():
            return self._refuse(connection, refusal)
        return None

    def process_response(self, connection: ServerConnection, request: Request, response: Response) -> None:
        """Log every refused handshake (ours, and websockets' own: a bad upgrade, an origin)."""
        if response.status_code < 400 or request.path == "/readyz":
            return  # a 503 from /readyz is the probe's answer, not a refusal
        reason = (response.body or b"").decode("utf-8", "replace").split("\n", 1)[0]
        self._log(logging.WARNING if response.status_code in (401, 403, 429) else logging.INFO,
                  f"http {response.status_code}", "refused %s %s from %s: %d %s", printable(request.method, 16),
                  printable(request.path), client_host(connection), response.status_code, printable(reason, 120))

    def connection_class(self) -> type[ServerConnection]:
        """A connection class that logs handshakes which end with no request to answer."""
        handshake = self

        class LoggedConnection(ServerConnection):
            async def handshake(self, *args: Any, **kwargs: Any) -> None:
                try:
                    await super().handshake(*args, **kwargs)
                except asyncio.CancelledError:  # open_timeout: a request that never came whole
                    handshake.failed(self, "no complete request within the open timeout")
                    raise
                if self.request is None:
                    exc = self.protocol.handshake_exc
                    cause = exc.__cause__ if exc is not None and exc.__cause__ is not None else exc
                    handshake.failed(self, f"{exc or 'the connection closed'}"
                                           + (f" ({printable(str(cause), 120)})" if cause is not exc else ""))

        return LoggedConnection

    def failed(self, connection: ServerConnection, why: str) -> None:
        self._log(logging.INFO, "failed", "failed handshake from %s: %s; no response is possible",
                  client_host(connection), why)

    # -- helpers -----------------------------------------------------------------------

    def _refuse(self, connection: ServerConnection, refusal: Refusal) -> Response:
        if self.ingest.metrics is not None:
            self.ingest.metrics.refused.labels(refusal.reason).inc()
        response = connection.respond(http.HTTPStatus(refusal.status), refusal.message)
        if refusal.retry_after_s:
            response.headers["Retry-After"] = str(refusal.retry_after_s)
        return response

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        offered = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not offered:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
            offered = (query.get("token") or [""])[0]
        # Compare against every key in constant time, so timing tells nothing.
        return bool(offered) and any(hmac.compare_digest(offered.encode(), k.encode()) for k in self.ingest.api_keys)

    def _log(self, level: int, key: str, message: str, *args: Any) -> None:
        dropped = self.throttle.allow(key, time.monotonic())
        if dropped is not None:
            log.log(level, message + (f" ({dropped} more like it not logged)" if dropped else ""), *args)


@functools.cache
def _web_file(name: str) -> bytes:
    return (importlib.resources.files("pipeline") / "web" / name).read_bytes()

