"""A streaming client for ``/v1/stream``: what ``pipeline stream`` (and the tests) use.

It sends 16 kHz PCM16 in 100 ms frames at real-time pace (or ``speed`` times faster),
receives concurrently, and records when each frame left and each message arrived, so
callers can measure latency against stream time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .config import SAMPLE_RATE
from .errors import AudioError


def load_audio(path: str) -> np.ndarray:
    """Decode any file PyAV reads (WAV, FLAC, MP3, ...) to 16 kHz mono float32.

    Raises:
        AudioError: the file is missing, unreadable or holds no audio.
    """
    from faster_whisper.audio import decode_audio

    try:
        audio = decode_audio(path, sampling_rate=SAMPLE_RATE)
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except Exception as exc:  # PyAV raises a zoo of errors for bad input
        raise AudioError(f"{path}: cannot decode audio ({type(exc).__name__}: {exc})") from None
    if not len(audio):
        raise AudioError(f"{path}: holds no audio")
    return np.asarray(audio, dtype=np.float32)


@dataclass
class StreamResult:
    """Everything one streamed file produced, with timings on the monotonic clock."""

    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (arrival, message)
    sent: list[tuple[float, int]] = field(default_factory=list)  # (send time, samples sent so far)
    timed_out: bool = False  # no ``stopped`` within the timeout
    closed: tuple[int | None, str] | None = None  # (code, reason) if the server closed early

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("type") == kind]


class StreamClient:
    """One connection to ``/v1/stream`` that can stream several files, one after another.

    Use as ``async with StreamClient(url) as client: result = await client.send(audio)``.
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None, open_timeout_s: float = 30.0,
                 ssl_context: Any = None) -> None:
        self.url = url
        self.headers = headers
        self.ssl_context = ssl_context  # for wss:// with a private CA; None: the system's
        self.open_timeout_s = open_timeout_s
        self.ws: Any = None
        self._inbox: asyncio.Queue[tuple[float, dict[str, Any]] | None] = asyncio.Queue()
        self._receiver: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StreamClient:
        extra = {"ssl": self.ssl_context} if self.ssl_context is not None else {}
        self.ws = await connect(self.url, max_size=None, compression=None, additional_headers=self.headers,
                                open_timeout=self.open_timeout_s, **extra)
        self._receiver = asyncio.create_task(self._receive())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
        await self.ws.close()

    async def _receive(self) -> None:
        try:
            async for raw in self.ws:
                self._inbox.put_nowait((time.monotonic(), json.loads(raw)))
        finally:
            self._inbox.put_nowait(None)  # the connection is gone

    async def send(
        self,
        audio: np.ndarray,
        speed: float = 1.0,
        frame_ms: int = 100,
        start: dict[str, Any] | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        timeout_s: float = 120.0,
    ) -> StreamResult:
        """Stream ``audio`` (16 kHz float32) as one stream: start, frames, stop, until ``stopped``."""
        result = StreamResult()
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        frame = SAMPLE_RATE * frame_ms // 1000 * 2
        done = asyncio.Event()

        async def collect() -> None:
            while (item := await self._inbox.get()) is not None:
                result.messages.append(item)
                if on_message is not None:
                    on_message(item[1])
                if item[1] == {"type": "status", "message": "stopped"}:
                    done.set()
                    return
            result.closed = (self.ws.close_code, self.ws.close_reason or "")
            self._inbox.put_nowait(None)  # keep telling later calls the connection is gone
            done.set()

        collector = asyncio.create_task(collect())
        try:
            await self.ws.send(json.dumps({"action": "start", "sample_rate": SAMPLE_RATE, "format": "pcm_s16le",
                                           **(start or {})}))
            t0 = time.monotonic()
            for i, offset in enumerate(range(0, len(pcm), frame)):
                if done.is_set():
                    break
                delay = t0 + i * frame_ms / 1000 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                chunk = pcm[offset : offset + frame]
                await self.ws.send(chunk)
                result.sent.append((time.monotonic(), offset // 2 + len(chunk) // 2))
            if not done.is_set():
                await self.ws.send(json.dumps({"action": "stop"}))
            await asyncio.wait_for(done.wait(), timeout=timeout_s)
        except ConnectionClosed:
            await asyncio.wait_for(done.wait(), timeout=5)
        except asyncio.TimeoutError:
            result.timed_out = True
        finally:
            collector.cancel()
        return result


async def stream(url: str, audio: np.ndarray, headers: dict[str, str] | None = None, ssl_context: Any = None,
                 **options: Any) -> StreamResult:
    """Stream ``audio`` (16 kHz float32) to ``url`` on a new connection and collect the replies.

    ``options`` are those of :meth:`StreamClient.send`.
    """
    async with StreamClient(url, headers, ssl_context=ssl_context) as client:
        return await client.send(audio, **options)
