"""The worker's engines: prefix handling in isolation, and the real model on real speech."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from pipeline.config import WorkersConfig
from pipeline.errors import ConfigError
from workers.engine import FakeEngine, resolve_model
from workers.whisper import _rebase, closed_context, has_words

normalize = EnglishTextNormalizer()


def test_context_always_ends_a_sentence():
    assert closed_context("hurry up the bank") == "hurry up the bank."
    assert closed_context(" The fish  twisted. ") == "The fish twisted."
    assert closed_context("for you,") == "for you,"  # mid-sentence on purpose: it goes on
    assert closed_context("") == ""


def test_rebase_makes_word_times_relative_and_inside_the_utterance():
    words = [{"word": "a", "start": 1.9, "end": 2.3}, {"word": "b", "start": 2.5, "end": 4.0}]
    assert _rebase(words, 2.0, 1.5) == [{"word": "a", "start": 0.0, "end": 0.3}, {"word": "b", "start": 0.5, "end": 1.5}]


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


SECOND = "The juice of lemons makes fine punch."


@pytest.fixture(scope="module")
def engines():
    from workers.engine import WhisperEngine

    return {w: WhisperEngine(WorkersConfig(encoder_window=w)) for w in ("full", "fit")}


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis))


@pytest.mark.parametrize("window", ["full", "fit"])
def test_real_model_decodes_in_context_and_returns_only_the_new_text(speech, engines, window):
    audio, second_start = speech
    engine = engines[window]
    out = engine.transcribe(audio, {"prefix": "The fish twisted and turned on the bent hook.",
                                    "context_s": second_start / 16000, "beam_size": 5, "window": window})
    assert wer(SECOND, out["text"]) <= 0.15, out
    assert "fish" not in out["text"].lower()  # the context's text is not returned
    alone = engine.transcribe(audio[second_start:], {"beam_size": 1, "window": window})
    assert wer(SECOND, alone["text"]) <= 0.3, alone


@pytest.mark.parametrize("window", ["full", "fit"])
def test_real_model_word_timestamps_do_not_change_the_text(speech, engines, window):
    audio, second_start = speech
    options = {"prefix": "The fish twisted and turned on the bent hook.", "context_s": second_start / 16000,
               "beam_size": 5, "window": window}
    plain = engines[window].transcribe(audio, options)
    out = engines[window].transcribe(audio, {**options, "word_timestamps": True})
    assert out["text"] == plain["text"] and has_words(out["text"])  # one decode path, words or not
    assert wer(SECOND, out["text"]) <= 0.15, out
    words = out["words"]
    assert words and normalize(" ".join(w["word"] for w in words)) == normalize(out["text"])
    duration = len(audio[second_start:]) / 16000
    assert all(0 <= w["start"] <= w["end"] <= duration + 0.01 for w in words), words
    assert words[-1]["end"] > duration / 2  # spread over the utterance, not bunched at its start


@pytest.mark.parametrize("window", ["full", "fit"])
def test_real_model_after_a_final_without_a_full_stop_keeps_the_new_words(speech, engines, window):
    audio, second_start = speech
    for previous in ("The fish twisted and turned on the bent hook", "the fish twisted and turned on the bent hook"):
        out = engines[window].transcribe(audio, {"prefix": previous, "context_s": second_start / 16000,
                                                 "beam_size": 5, "window": window})
        assert has_words(out["text"]) and out["text"][0].isalnum(), out  # no "." closing the old sentence
        assert wer(SECOND, out["text"]) <= 0.15, out


@pytest.mark.parametrize("window", ["full", "fit"])
def test_real_model_final_continues_the_committed_text(speech, engines, window):
    audio, second_start = speech
    for committed in ("the juice of", "The juice", "the juice of lemons makes"):
        out = engines[window].transcribe(audio, {"prefix": "The fish twisted and turned on the bent hook.",
                                                 "context_s": second_start / 16000, "committed": committed,
                                                 "beam_size": 5, "window": window, "word_timestamps": True})
        assert out["text"].startswith(committed), out
        assert wer(SECOND, out["text"]) <= 0.15, out
        assert normalize(" ".join(w["word"] for w in out["words"])) == normalize(out["text"])
