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
    stopped: bool = False
    closed: tuple[int | None, str] | None = None  # (code, reason) if the server closed early

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("type") == kind]

    def sent_at(self, sample: int) -> float:
        """When the frame holding stream sample ``sample`` left the client."""
        for t, total in self.sent:
            if total >= sample:
                return t
        return self.sent[-1][0] if self.sent else 0.0


async def stream(
    url: str,
    audio: np.ndarray,
    speed: float = 1.0,
    frame_ms: int = 100,
    start: dict[str, Any] | None = None,
    on_message: Callable[[dict[str, Any]], None] | None = None,
    timeout_s: float = 120.0,
    headers: dict[str, str] | None = None,
) -> StreamResult:
    """Stream ``audio`` (16 kHz float32) to ``url`` and collect the replies until ``stopped``."""
    result = StreamResult()
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    frame = SAMPLE_RATE * frame_ms // 1000 * 2
    async with connect(url, max_size=None, compression=None, additional_headers=headers, open_timeout=30) as ws:
        stopped = asyncio.Event()

        async def receive() -> None:
            try:
                async for raw in ws:
                    message = json.loads(raw)
                    result.messages.append((time.monotonic(), message))
                    if on_message is not None:
                        on_message(message)
                    if message == {"type": "status", "message": "stopped"}:
                        result.stopped = True
                        stopped.set()
                        return
            finally:
                if ws.close_code is not None and not result.stopped:
                    result.closed = (ws.close_code, ws.close_reason or "")
                stopped.set()

        receiver = asyncio.create_task(receive())
        await ws.send(json.dumps({"action": "start", "sample_rate": SAMPLE_RATE, "format": "pcm_s16le", **(start or {})}))
        t0 = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm), frame)):
            if stopped.is_set():
                break
            due = t0 + i * frame_ms / 1000 / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = pcm[offset : offset + frame]
            await ws.send(chunk)
            result.sent.append((time.monotonic(), offset // 2 + len(chunk) // 2))
        if not stopped.is_set():
            await ws.send(json.dumps({"action": "stop"}))
        try:
            await asyncio.wait_for(stopped.wait(), timeout=timeout_s)
        finally:
            receiver.cancel()
    return result
