"""The Whisper engine's decisions (quality gate, fallbacks, retry without context), with
the model replaced by a script: which decode passes are made, and in what order."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.config import WorkersConfig
from workers.whisper import Decoded, WhisperEngine


class Tokenizer:
    """Words as tokens: enough of faster-whisper's Tokenizer for the engine's logic."""

    sot_sequence = [0]
    no_timestamps = 1
    eot = 2

    def __init__(self) -> None:
        self.vocab: list[str] = ["<sot>", "<nots>", "<eot>"]

    def encode(self, text: str) -> list[int]:
        out = []
        for word in text.split():
            if word not in self.vocab:
                self.vocab.append(word)
            out.append(self.vocab.index(word))
        return out

    def decode(self, tokens: list[int]) -> str:
        return " " + " ".join(self.vocab[t] for t in tokens)


class ScriptedEngine(WhisperEngine):
    def __init__(self, script: list[tuple[str, float, float]], **config: Any) -> None:
        self.config = WorkersConfig(**config)
        self.default_beam = 5
        self.tok = Tokenizer()
        self.script = list(script)  # (text, avg_logprob, compression_ratio) per pass
        self.passes: list[dict[str, Any]] = []

    def _tokenizer(self, options: dict[str, Any]) -> Any:
        return self.tok

    def _encode(self, audio: np.ndarray, window_s: float) -> Any:
        return ("encoded", len(audio), window_s)

    def _pass(self, encoded: Any, tokenizer: Any, prompt: list[int], n_context: int, window_s: float,
              beam: int = 1, temperature: float = 0.0) -> Decoded:
        text, logprob, ratio = self.script.pop(0)
        self.passes.append({"samples": encoded[1], "window_s": window_s, "temperature": temperature,
                            "context": tokenizer.decode(prompt[2:2 + n_context]).strip()})
        return Decoded(tokenizer.encode(text), logprob, ratio, window_s, temperature)


AUDIO = np.zeros(16000 * 5, np.float32)
CONTEXT = {"prefix": "jump the fence and hurry up the bank", "context_s": 3.0}


def test_a_good_decode_is_made_once():
    engine = ScriptedEngine([("Canned pears lack full flavor.", -0.2, 1.1)])
    out = engine.transcribe(AUDIO, {**CONTEXT, "window": "fit"})
    assert out["text"] == "Canned pears lack full flavor." and "fallbacks" not in out
    assert len(engine.passes) == 1 and engine.passes[0]["window_s"] < 30
    assert engine.passes[0]["context"] == "jump the fence and hurry up the bank."  # closed with a full stop


def test_punctuation_only_after_the_context_is_decoded_again_without_it():
    engine = ScriptedEngine([(".", -0.1, 0.5), ("Canned pears lack full flavor.", -0.2, 1.1)])
    out = engine.transcribe(AUDIO, {**CONTEXT, "window": "full"})
    assert out["text"] == "Canned pears lack full flavor." and out["fallbacks"] == ["no_context"]
    assert [p["samples"] for p in engine.passes] == [len(AUDIO), len(AUDIO) - 3 * 16000]
    assert engine.passes[1]["context"] == ""


def test_a_failed_fitted_decode_goes_to_the_full_window_then_to_sampling():
    engine = ScriptedEngine([("the the the the", -0.3, 3.0), ("still bad", -1.5, 1.0), ("hot", -1.2, 1.0),
                             ("fine words", -0.4, 1.0)])
    out = engine.transcribe(AUDIO, {"window": "fit"})
    assert out["text"] == "fine words"
    assert out["fallbacks"] == ["full_window:gate", "temperature_0.2", "temperature_0.4"]
    assert [p["window_s"] for p in engine.passes][1:] == [30.0, 30.0, 30.0]
    assert [p["temperature"] for p in engine.passes] == [0.0, 0.0, 0.2, 0.4]


def test_when_every_pass_fails_the_likeliest_sane_one_wins():
    script = [("a a a a", -0.1, 9.0)] + [(f"try {i}", -1.5 - i / 10, 1.0) for i in range(6)]
    engine = ScriptedEngine(script)
    out = engine.transcribe(AUDIO, {"window": "full"})
    assert out["text"] == "try 0"  # the repetitive one is never chosen, however likely


def test_partials_skip_the_gate():
    engine = ScriptedEngine([("the the the the", -2.0, 3.0)])
    engine.transcribe(AUDIO, {"window": "fit", "fallback": False})
    assert len(engine.passes) == 1


def test_what_sends_a_fitted_decode_to_the_full_window():
    from workers.whisper import Decoded

    d = Decoded([], avg_logprob=-0.2, compression_ratio=1.2, window_s=16.0)
    assert d.suspect("The birch canoe slid on the smooth planks.", 2.5) is None
    assert d.suspect("", 2.5) == "no_words"
    assert d.suspect("The stray cat gave birth to kittens. The stray cat gave birth to kittens.", 4.0) == "repeated"
    assert d.suspect("one two three four five six seven eight nine ten eleven twelve thirteen", 1.5) == "too_many_words"
    assert d.suspect("And so my fellow Americans.", 11.0) == "too_few_words"
    assert d.suspect("Yes.", 1.0) is None  # short answers are short
