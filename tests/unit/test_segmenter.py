"""The segmenter, fed synthetic audio through an energy VAD: no model, no clock."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import SegmenterConfig
from pipeline.core.segmenter import Segmenter
from tests.helpers import SR, EnergyVad, silence, speech_like, tone


def run(audio: np.ndarray, config: SegmenterConfig | None = None, chunk: int = 1600, partials: bool = True):
    seg = Segmenter(config or SegmenterConfig(), EnergyVad(), partials=partials)
    cuts = []
    for i in range(0, len(audio), chunk):
        cuts += seg.feed(audio[i : i + chunk])
    cuts += seg.flush()
    return cuts


def finals(cuts):
    return [c for c in cuts if c.kind == "final"]


def test_two_utterances_are_cut_at_the_pause():
    audio = speech_like([("silence", 1.0), ("speech", 2.0), ("silence", 1.0), ("speech", 1.5), ("silence", 1.0)])
    f = finals(run(audio))
    assert [c.utterance_id for c in f] == [0, 1]
    pad = SegmenterConfig().speech_pad_ms / 1000
    assert f[0].start / SR == pytest.approx(1.0 - pad, abs=0.04)
    assert f[0].end / SR == pytest.approx(3.0 + pad, abs=0.04)
    assert f[1].start / SR == pytest.approx(4.0 - pad, abs=0.04)
    assert len(f[0].audio) == f[0].end - f[0].start


def test_cut_audio_is_the_stream_audio():
    audio = speech_like([("silence", 0.5), ("speech", 1.0), ("silence", 1.0)])
    audio[8000:24000] += np.linspace(0, 0.1, 16000, dtype=np.float32)  # make it non-periodic
    (f,) = finals(run(audio))
    np.testing.assert_array_equal(f.audio, audio[f.start : f.end])


def test_chunk_size_does_not_change_the_cuts():
    audio = speech_like([("silence", 0.7), ("speech", 1.3), ("silence", 0.6), ("speech", 0.9), ("silence", 0.8)])
    a = [(c.kind, c.start, c.end) for c in finals(run(audio, chunk=160))]
    b = [(c.kind, c.start, c.end) for c in finals(run(audio, chunk=48000))]
    assert a == b and len(a) == 2


def test_short_pause_does_not_split():
    audio = speech_like([("speech", 1.0), ("silence", 0.15), ("speech", 1.0), ("silence", 1.0)])
    assert len(finals(run(audio))) == 1


def test_clicks_are_dropped():
    audio = speech_like([("silence", 0.5), ("speech", 0.05), ("silence", 1.0)])
    assert run(audio) == []


def test_partials_come_before_the_final_and_at_the_interval():
    cfg = SegmenterConfig(first_partial_s=0.5, partial_interval_s=0.5)
    cuts = run(speech_like([("speech", 3.0), ("silence", 1.0)]), cfg)
    kinds = [c.kind for c in cuts]
    assert kinds[-1] == "final" and set(kinds[:-1]) == {"partial"}
    ends = [c.end / SR for c in cuts if c.kind == "partial"]
    assert ends[0] == pytest.approx(0.5, abs=0.04)
    assert all(b - a == pytest.approx(0.5, abs=0.04) for a, b in zip(ends, ends[1:]))
    assert all(c.utterance_id == 0 for c in cuts)


def test_no_partials_when_disabled():
    cuts = run(speech_like([("speech", 3.0), ("silence", 1.0)]), partials=False)
    assert [c.kind for c in cuts] == ["final"]


def test_long_speech_is_cut_before_whisper_window():
    cfg = SegmenterConfig(max_utterance_s=5.0)
    cuts = finals(run(tone(12.0), cfg))
    assert len(cuts) >= 3
    assert all((c.end - c.start) / SR <= 5.0 + 0.05 for c in cuts)
    # consecutive and covering all the audio: nothing is lost at a forced cut
    assert all(a.end == b.start for a, b in zip(cuts, cuts[1:]))
    assert cuts[0].start == 0 and cuts[-1].end == len(tone(12.0))


def test_flush_finalises_open_utterance_with_all_audio():
    audio = speech_like([("silence", 0.5), ("speech", 1.0)])
    cuts = run(audio)
    assert finals(cuts)[-1].end == len(audio)


def test_flush_of_silence_gives_nothing():
    assert run(silence(2.0)) == []


def test_ids_continue_from_first_utterance_id():
    seg = Segmenter(SegmenterConfig(), EnergyVad(), first_utterance_id=7)
    cuts = seg.feed(speech_like([("speech", 1.0), ("silence", 1.0)]))
    assert [c.utterance_id for c in cuts if c.kind == "final"] == [7]


def test_buffer_stays_bounded_in_silence():
    seg = Segmenter(SegmenterConfig(), EnergyVad())
    for _ in range(100):
        seg.feed(silence(1.0))
    assert seg.buffer.end - seg.buffer.start < SR


def test_retains_recent_utterances_for_context_but_bounded():
    seg = Segmenter(SegmenterConfig(), EnergyVad(), retain_utterances=2, retain_s=5.0)
    piece = speech_like([("speech", 1.0), ("silence", 1.0)])
    cuts = []
    for _ in range(6):
        cuts += [c for c in seg.feed(piece) if c.kind == "final"]
    # the last two finished utterances are still there
    assert seg.buffer.start <= cuts[-2].start
    np.testing.assert_array_equal(seg.audio(cuts[-2].start, cuts[-2].end), cuts[-2].audio)
    assert seg.buffer.end - seg.buffer.start <= 5.0 * SR + SR


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 900), st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 500)),
                min_size=1, max_size=30))
def test_buffer_slices_match_the_stream(ops):
    from pipeline.core.segmenter import _Buffer

    buf, stream = _Buffer(), np.zeros(0, dtype=np.float32)
    for size, a, b, trim_back in ops:
        chunk = np.arange(len(stream), len(stream) + size, dtype=np.float32)
        buf.append(chunk)
        stream = np.concatenate([stream, chunk])
        lo = max(a, buf.start)
        np.testing.assert_array_equal(buf.slice(a, b), stream[lo:max(lo, min(b, len(stream)))])
        buf.trim(len(stream) - trim_back)
        assert buf.end == len(stream)
