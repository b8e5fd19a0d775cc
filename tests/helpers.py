"""Shared test helpers: synthetic audio, a fake VAD, and timeouts CI can scale."""

from __future__ import annotations

import os

import numpy as np

SR = 16000
#: One factor for every wait in the tests; CI on a slow machine can raise it.
TIMEOUT_SCALE = float(os.environ.get("PIPELINE_TEST_TIMEOUT_SCALE", "1"))


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_SCALE


def tone(seconds: float, amplitude: float = 0.3, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def speech_like(pattern: list[tuple[str, float]]) -> np.ndarray:
    """Concatenate ("speech"|"silence", seconds) pieces: tones stand in for speech."""
    return np.concatenate([tone(s) if kind == "speech" else silence(s) for kind, s in pattern])


class EnergyVad:
    """A stand-in for Silero: a window is speech when it is loud."""

    def __init__(self, threshold: float = 0.01) -> None:
        self.threshold = threshold
        self.calls = 0

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        self.calls += 1
        windows = samples.reshape(-1, 512)
        return (np.sqrt(np.mean(windows**2, axis=1)) > self.threshold).astype(np.float32)


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
