"""Cuts a 16 kHz stream into utterances from voice-activity probabilities.

The rules follow Silero VAD's ``get_speech_timestamps`` (which faster-whisper adapts),
turned into a streaming state machine:

* speech starts at the first window whose probability reaches ``vad_threshold``, and the
  utterance starts ``speech_pad_ms`` before it (never before the previous utterance's end);
* speech goes on while the probability stays at or above ``vad_threshold - 0.15``
  (hysteresis, Silero's ``neg_threshold``);
* it ends after ``min_silence_ms`` below that, and the utterance ends ``speech_pad_ms``
  after the last speech window;
* bursts shorter than ``min_speech_ms`` that never got a partial are dropped as noise;
* an utterance longer than ``max_utterance_s`` is cut at its quietest recent window,
  because Whisper sees at most 30 s.

While an utterance is open it asks for a partial after ``first_partial_s`` of speech and
then every ``partial_interval_s``. All times are sample counts; no clock is read.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..config import SAMPLE_RATE, SegmenterConfig

#: Silero VAD scores windows of 512 samples (32 ms) at 16 kHz.
WINDOW = 512

VadFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Cut:
    """A request to transcribe ``audio`` = samples [start, end) of the stream."""

    kind: str  # "partial" or "final"
    utterance_id: int
    start: int
    end: int
    audio: np.ndarray


class _Buffer:
    """Audio kept from sample ``start`` on; old samples are trimmed as they stop mattering.

    Kept as the list of appended chunks, so that appending and reading the newest samples
    (what the VAD does on every frame) copy only those samples, not the whole buffer.
    """

    def __init__(self) -> None:
        self.start = 0
        self.end = 0
        self._chunks: list[np.ndarray] = []
        self._starts: list[int] = []  # stream sample where each chunk starts

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._chunks.append(samples)
            self._starts.append(self.end)
            self.end += len(samples)

    def slice(self, a: int, b: int) -> np.ndarray:
        a, b = max(a, self.start), min(b, self.end)
        if b <= a:
            return np.zeros(0, dtype=np.float32)
        first = bisect.bisect_right(self._starts, a) - 1
        last = bisect.bisect_left(self._starts, b)
        pieces = [c[max(a - s0, 0) : b - s0] for c, s0 in zip(self._chunks[first:last], self._starts[first:last])]
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()

    def trim(self, before: int) -> None:
        """Forget samples before ``before`` (whole chunks only; reads never see them)."""
        before = min(before, self.end)
        if before <= self.start:
            return
        drop = bisect.bisect_right(self._starts, before) - 1  # the chunk holding ``before`` stays
        if drop > 0:
            del self._chunks[:drop]
            del self._starts[:drop]
        self.start = before


class Segmenter:
    """Streaming utterance segmenter.

    Args:
        config: thresholds and durations.
        vad: stateful function scoring a whole number of 512-sample windows, returning
            one speech probability per window (see :class:`pipeline.vad.SileroStream`).
        partials: whether to ask for partials at all.
        first_utterance_id: id given to the first utterance (ids are contiguous).
        retain_utterances: keep the audio of this many finished utterances (and the
            silence between them) for :meth:`audio`, as context for the next ones.
        retain_s: but never more than this many seconds of it.
    """

    def __init__(
        self,
        config: SegmenterConfig,
        vad: VadFn,
        partials: bool = True,
        first_utterance_id: int = 0,
        retain_utterances: int = 0,
        retain_s: float = 0.0,
    ) -> None:
        ms = SAMPLE_RATE // 1000
        self.cfg = config
        self.vad = vad
        self.partials = partials
        self.threshold = config.vad_threshold
        self.neg_threshold = max(config.vad_threshold - 0.15, 0.01)
        self.pad = config.speech_pad_ms * ms
        self.min_silence = config.min_silence_ms * ms
        self.min_speech = config.min_speech_ms * ms
        self.max_len = int(config.max_utterance_s * SAMPLE_RATE)
        self.first_partial = int(config.first_partial_s * SAMPLE_RATE)
        self.partial_interval = int(config.partial_interval_s * SAMPLE_RATE)
        self.next_id = first_utterance_id
        self.buffer = _Buffer()
        self._scored = 0  # samples already scored by the VAD
        self.in_speech = False
        self._utt_id: int | None = None
        self._utt_start = 0
        self._onset = 0
        self._speech_end = 0
        self._next_partial = 0
        self._last_end = 0
        self._history: list[tuple[int, float]] = []  # (window start, probability) of the open utterance
        self.retain_s = retain_s
        self.finished: collections.deque[tuple[int, int, int]] = collections.deque(maxlen=retain_utterances + 1)
        self._retain_utterances = retain_utterances

    @property
    def total(self) -> int:
        """Samples received so far."""
        return self.buffer.end

    def feed(self, samples: np.ndarray) -> list[Cut]:
        """Add 16 kHz float32 samples; returns the partials and finals now due."""
        self.buffer.append(np.asarray(samples, dtype=np.float32))
        whole = (self.buffer.end - self._scored) // WINDOW * WINDOW
        if whole == 0:
            return []
        windows = self.buffer.slice(self._scored, self._scored + whole)
        probs = self.vad(windows)
        cuts: list[Cut] = []
        for i, p in enumerate(np.asarray(probs, dtype=np.float32).ravel()):
            cuts.extend(self._step(self._scored + i * WINDOW, float(p)))
        self._scored += whole
        keep = self._utt_start if self.in_speech else self._scored - self.pad
        if self._retain_utterances and self.finished:
            keep = max(min(keep, self.finished[0][1]), keep - int(self.retain_s * SAMPLE_RATE))
        self.buffer.trim(keep)
        return cuts

    def audio(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) of the stream, as far as they are still kept."""
        return self.buffer.slice(start, end)

    def flush(self) -> list[Cut]:
        """End of stream: the open utterance, if any, is finalised with all audio so far."""
        if not self.in_speech:
            return []
        self.in_speech = False
        if self._utt_id is None and self._speech_end - self._onset < self.min_speech:
            return []
        return [self._final(self.buffer.end)]

    def discard(self) -> int | None:
        """Drop the open utterance without a final; returns its id if it had one."""
        if not self.in_speech:
            return None
        self.in_speech = False
        self._last_end = self.buffer.end
        utterance, self._utt_id = self._utt_id, None
        return utterance

    # -- the state machine ---------------------------------------------------------

    def _step(self, w0: int, p: float) -> list[Cut]:
        now = w0 + WINDOW
        if not self.in_speech:
            if p >= self.threshold:
                self.in_speech = True
                self._utt_start = max(w0 - self.pad, self._last_end, self.buffer.start)
                self._onset = w0
                self._speech_end = now
                self._next_partial = w0 + self.first_partial
                self._utt_id = None
                self._history = [(w0, p)]
            return []

        self._history.append((w0, p))
        if p >= self.neg_threshold:
            self._speech_end = now
        if now - self._speech_end >= self.min_silence:
            self.in_speech = False
            if self._utt_id is None and self._speech_end - self._onset < self.min_speech:
                return []  # a click or a breath, not speech
            return [self._final(min(self._speech_end + self.pad, now))]
        if now - self._utt_start >= self.max_len:
            return [self._force_cut(now)]
        if (
            self.partials
            and now >= self._next_partial
            and self._speech_end == now  # not in a trailing silence: the final is near
            and now - self._onset >= self.min_speech
        ):
            self._next_partial = now + self.partial_interval
            return [self._cut("partial", self._utt_start, now)]
        return []

    def _force_cut(self, now: int) -> Cut:
        """Cut an over-long utterance at the quietest window of its last quarter."""
        recent = [(w, p) for w, p in self._history if w >= now - self.max_len // 4]
        w, _ = min(recent, key=lambda wp: wp[1])
        cut_at = max(w + WINDOW // 2, self._utt_start + 1)
        final = self._final(cut_at)
        self.in_speech = True
        self._utt_start = self._onset = cut_at
        self._next_partial = cut_at + self.first_partial
        self._history = [(x, q) for x, q in self._history if x >= cut_at]
        return final

    def _final(self, end: int) -> Cut:
        cut = self._cut("final", self._utt_start, end)
        self.finished.append((cut.utterance_id, cut.start, cut.end))
        self._last_end = end
        self._utt_id = None
        return cut

    def _cut(self, kind: str, start: int, end: int) -> Cut:
        if self._utt_id is None:
            self._utt_id = self.next_id
            self.next_id += 1
        return Cut(kind, self._utt_id, start, end, self.buffer.slice(start, end))
