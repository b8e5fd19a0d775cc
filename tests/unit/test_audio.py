"""PCM decoding and resampling, and the Silero wrapper's streaming equivalence."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.audio import PcmDecoder, level
from pipeline.errors import ProtocolError
from tests.helpers import tone


def test_s16_and_f32_decode_to_the_same_samples():
    x = tone(0.1)
    s16 = PcmDecoder("pcm_s16le", 16000).decode((x * 32768).astype("<i2").tobytes())
    f32 = PcmDecoder("pcm_f32le", 16000).decode(x.astype("<f4").tobytes())
    np.testing.assert_allclose(s16, f32, atol=1e-4)


def test_bad_frames():
    with pytest.raises(ProtocolError):
        PcmDecoder("pcm_s16le", 16000).decode(b"\x00")
    with pytest.raises(ProtocolError):
        PcmDecoder("pcm_f32le", 16000).decode(b"\x00" * 6)
    with pytest.raises(ProtocolError):
        PcmDecoder("pcm_f32le", 16000).decode(np.array([np.nan], dtype="<f4").tobytes())


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_duration_and_pitch(rate):
    t = np.arange(rate) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    dec = PcmDecoder("pcm_s16le", rate)
    frame = rate // 10 * 2
    out = np.concatenate([dec.decode(x[i : i + frame]) for i in range(0, len(x), frame)] + [dec.flush()])
    assert abs(len(out) - 16000) <= 32
    peak = np.argmax(np.abs(np.fft.rfft(out[:16000] if len(out) >= 16000 else np.pad(out, (0, 16000 - len(out))))))
    assert abs(peak - 440) <= 2


def test_level_range():
    assert level(np.zeros(100, dtype=np.float32)) == 0.0
    assert level(np.ones(100, dtype=np.float32)) == 1.0
    assert 0.0 < level(tone(0.1, amplitude=0.01)) < 0.5


def test_silero_in_pieces_equals_silero_whole():
    from faster_whisper.audio import decode_audio
    from faster_whisper.vad import get_vad_model

    from pipeline.vad import SileroStream
    from tests.data import JFK

    audio = decode_audio(str(JFK))[: 512 * 300]
    whole = get_vad_model()(audio).ravel()
    stream = SileroStream()
    pieces = np.concatenate([stream(audio[i : i + 512 * 7]) for i in range(0, len(audio), 512 * 7)])
    np.testing.assert_allclose(pieces, whole, atol=1e-6)
    assert whole.max() > 0.9 and whole.min() < 0.1  # it found speech and silence
