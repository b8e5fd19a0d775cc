"""Client PCM to 16 kHz float32: sample-format decoding and streaming resampling.

Resampling uses libswresample through PyAV (already a faster-whisper dependency). It is
stateful, so a stream cut into frames resamples the same as the stream whole.
"""

from __future__ import annotations

import numpy as np

from ..config import SAMPLE_RATE
from ..errors import ProtocolError
from .protocol import FORMATS


def level(samples: np.ndarray) -> float:
    """Loudness for a level meter: RMS mapped from -60..0 dBFS onto 0..1."""
    if not len(samples):
        return 0.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    db = 20.0 * np.log10(max(rms, 1e-6))
    return float(min(max((db + 60.0) / 60.0, 0.0), 1.0))


class PcmDecoder:
    """Turns one stream's binary frames into 16 kHz mono float32.

    Args:
        fmt: ``pcm_s16le`` or ``pcm_f32le``.
        sample_rate: the client's rate; anything but 16 kHz is resampled.
    """

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self.fmt = fmt
        self.width = FORMATS[fmt]
        self.sample_rate = sample_rate
        self._resampler = None
        if sample_rate != SAMPLE_RATE:
            import av

            self._av = av
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._pts = 0

    def decode(self, data: bytes) -> np.ndarray:
        """Decode one binary frame.

        Raises:
            ProtocolError: the frame is not a whole number of samples.
        """
        if len(data) % self.width:
            raise ProtocolError(
                "bad_audio", f"{self.fmt} frames must be a multiple of {self.width} bytes; got {len(data)}"
            )
        if self.fmt == "pcm_s16le":
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        else:
            samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
            if not np.all(np.isfinite(samples)):
                raise ProtocolError("bad_audio", "pcm_f32le frame holds NaN or infinite samples")
            samples = np.clip(samples, -1.0, 1.0)
        return self._resample(samples)

    def flush(self) -> np.ndarray:
        """Samples still inside the resampler at the end of a stream."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._collect(self._resampler.resample(None))

    def _resample(self, samples: np.ndarray) -> np.ndarray:
        if self._resampler is None or not len(samples):
            return samples if self._resampler is None else np.zeros(0, dtype=np.float32)
        frame = self._av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += len(samples)
        return self._collect(self._resampler.resample(frame))

    @staticmethod
    def _collect(frames: list) -> np.ndarray:  # type: ignore[type-arg]
        if not frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)
