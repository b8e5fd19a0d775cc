"""ASR engines a worker can run: faster-whisper (:mod:`workers.whisper`), or a scripted fake.

An engine turns one job's audio into text. Workers are stateless, so everything an engine
needs comes in the call: the audio and the job's options.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from pipeline.config import SAMPLE_RATE, WorkersConfig

from .whisper import WhisperEngine, resolve_model

__all__ = ["Engine", "FakeEngine", "WhisperEngine", "load_engine", "resolve_model", "warm_up"]


class Engine(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray, options: dict[str, Any]) -> dict[str, Any]: ...


class FakeEngine:
    """A scripted stand-in for integration tests of everything but the model.

    It sleeps ``fake_delay_ms`` per job and answers with the audio's length, so tests know exactly what text to expect.
    Select it with ``model = "fake"``.
    """

    def __init__(self, config: WorkersConfig) -> None:
        self.name = "fake"
        self.delay_s = config.fake_delay_ms / 1000
        self.stall_s = config.fake_stall_s

    def transcribe(self, audio: np.ndarray, options: dict[str, Any]) -> dict[str, Any]:
        # fake_stall_s: every job's first attempt hangs that long (a stuck decoder, for
        # the deadline tests); the retry on a fresh worker answers normally.
        time.sleep(self.stall_s if self.stall_s and options.get("attempt") == 1 else self.delay_s)
        duration = len(audio) / SAMPLE_RATE - float(options.get("context_s") or 0.0)
        text = f"speech of {duration:.2f} seconds"
        committed = str(options.get("committed") or "")
        if committed and not text.startswith(committed):
            text = f"{committed} {text}"  # as the real engine: the committed text comes first
        result: dict[str, Any] = {"text": text, "segments": [{"start": 0.0, "end": round(duration, 3), "text": text}]}
        if options.get("word_timestamps") or options.get("batch"):
            result["words"] = [{"word": w, "start": round(duration * i / 4, 3), "end": round(duration * (i + 1) / 4, 3),
                                "probability": 1.0} for i, w in enumerate(text.split())]
        return result


def load_engine(config: WorkersConfig) -> Engine:
    if config.model == "fake":
        return FakeEngine(config)
    return WhisperEngine(config)


def warm_up(engine: Engine) -> None:
    """Run one decode so the first real job does not pay for lazy initialisation."""
    rng = np.random.default_rng(0)
    engine.transcribe((rng.standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32), {"beam_size": 1})
