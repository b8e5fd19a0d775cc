"""The worker's engines: prefix handling in isolation, and the real model on real speech."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from pipeline.config import WorkersConfig
from pipeline.errors import ConfigError
from workers.engine import FakeEngine, _shift, _strip_prefix, resolve_model

normalize = EnglishTextNormalizer()


def test_strip_prefix():
    assert _strip_prefix(" The fish  twisted. The juice.", "The fish twisted.") == "The juice."
    assert _strip_prefix("Something else.", "The fish twisted.") is None


def test_shift_drops_context_and_rebases_times():
    words = [{"word": "old", "start": 0.5, "end": 1.0}, {"word": "new", "start": 2.1, "end": 2.6}]
    assert _shift(words, 2.0) == [{"word": "new", "start": 0.1, "end": 0.6}]


def test_resolve_model(tmp_path):
    assert (tmp_path / "x").exists() is False
    assert resolve_model("bundled").endswith("model")
    assert resolve_model("small.en") == "small.en"  # a hub name passes through untouched
    with pytest.raises(ConfigError, match="model.bin"):
        resolve_model(str(tmp_path))


def test_fake_engine_reports_the_new_audio_only():
    out = FakeEngine(WorkersConfig(fake_delay_ms=0)).transcribe(np.zeros(48000, np.float32), {"context_s": 1.0})
    assert out["text"] == "speech of 2.00 seconds"


@pytest.fixture(scope="module")
def speech():
    from faster_whisper.audio import decode_audio

    from tests.data import STREAM_HEAD

    audio = decode_audio(str(STREAM_HEAD))
    # first two reference utterances: 0.80-3.72 s and 5.36-8.07 s
    return audio[int(0.5 * 16000) : int(8.4 * 16000)], int(4.9 * 16000) - int(0.5 * 16000)


@pytest.mark.parametrize("window", ["full", "fit"])
def test_real_model_decodes_in_context_and_returns_only_the_new_text(speech, window):
    from workers.engine import WhisperEngine

    audio, second_start = speech
    engine = WhisperEngine(WorkersConfig(encoder_window=window))
    out = engine.transcribe(audio, {"prefix": "The fish twisted and turned on the bent hook.",
                                    "context_s": second_start / 16000, "beam_size": 5})
    assert jiwer.wer(normalize("The juice of lemons makes fine punch."), normalize(out["text"])) <= 0.15, out
    alone = engine.transcribe(audio[second_start:], {"beam_size": 1, "window": window})
    assert "fish" not in alone["text"].lower() and "juice" in alone["text"].lower()


def test_real_model_word_timestamps_are_relative_to_the_utterance(speech):
    from workers.engine import WhisperEngine

    audio, second_start = speech
    engine = WhisperEngine(WorkersConfig(encoder_window="fit"))  # words always use the full window
    out = engine.transcribe(audio, {"prefix": "The fish twisted and turned on the bent hook.",
                                    "context_s": second_start / 16000, "word_timestamps": True})
    words = out["words"]
    assert words and normalize(words[0]["word"]) in {"the", "juice"}
    assert all(0 <= w["start"] <= w["end"] <= len(audio[second_start:]) / 16000 + 0.1 for w in words)
