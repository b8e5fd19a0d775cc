"""Silero VAD, as shipped inside faster-whisper, run one stream at a time.

faster-whisper scores a whole file in one call. A live stream arrives in pieces, so each
stream keeps the model's recurrent state (``h``, ``c``) and the last 64 samples of context
between calls; scoring a stream in pieces then gives exactly the probabilities of scoring
it whole (tests/unit/test_vad.py checks this).
"""

from __future__ import annotations

import functools

import numpy as np

from .core.segmenter import WINDOW

CONTEXT = 64


@functools.lru_cache(maxsize=1)
def _session():  # type: ignore[no-untyped-def]
    # One ONNX session per process, shared by all streams: its run() is thread-safe and
    # the per-stream state lives in SileroStream.
    from faster_whisper.vad import get_vad_model

    return get_vad_model().session


class SileroStream:
    """Per-stream Silero state; call it with a whole number of 512-sample windows."""

    def __init__(self) -> None:
        self.session = _session()
        self.h = np.zeros((1, 1, 128), dtype=np.float32)
        self.c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        windows = np.asarray(samples, dtype=np.float32).reshape(-1, WINDOW)
        if not len(windows):
            return np.zeros(0, dtype=np.float32)
        previous = np.concatenate([self.context[None, :], windows[:-1, -CONTEXT:]], axis=0)
        batch = np.concatenate([previous, windows], axis=1)
        probs, self.h, self.c = self.session.run(None, {"input": batch, "h": self.h, "c": self.c})
        self.context = windows[-1, -CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).ravel()


def warm_up() -> None:
    """Load the ONNX model now rather than on the first client's first frame."""
    SileroStream()(np.zeros(WINDOW, dtype=np.float32))
