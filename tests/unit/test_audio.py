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


@pytest.mark.parametrize("codec, suffix", [("mp3", ".mp3"), ("pcm_s16le", ".wav"), ("flac", ".flac")])
def test_client_reads_files_of_any_rate_and_channels(tmp_path, codec, suffix):
    import av

    from pipeline.client import load_audio

    path = tmp_path / f"stereo{suffix}"
    rate, seconds = 44100, 2
    t = np.arange(rate * seconds) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]) * 0.3
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        fmt = stream.codec_context.format.name
        scale, dtype = {"flt": (1, np.float32), "s16": (32767, np.int16), "s32": (2**31 - 1, np.int32)}[fmt[:3]]
        data = (stereo * scale).astype(dtype)
        frame = av.AudioFrame.from_ndarray(data if fmt.endswith("p") else data.T.reshape(1, -1).copy(), format=fmt, layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    audio = load_audio(str(path))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / 16000 - seconds) < 0.1
    assert 0.1 < np.abs(audio).max() <= 1.0


def test_client_rejects_bad_files(tmp_path):
    from pipeline.client import load_audio
    from pipeline.errors import AudioError

    with pytest.raises(AudioError, match="no such file"):
        load_audio(str(tmp_path / "missing.wav"))
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(AudioError):
        load_audio(str(bad))
