"""One client stream as a state machine: protocol in, jobs and replies out.

The I/O layer feeds it text frames, binary frames and worker results, then drains
:meth:`Session.messages_to_send` (for the client) and :meth:`Session.jobs_to_send` (for the
dispatcher). Bad input never raises: it becomes an ``error`` message and the stream goes on.

The guarantees of docs/protocol.md are kept here, where they can be tested without sockets:

* each utterance gets exactly one final, and finals go out in utterance order;
* an utterance's partials all go out before its final, and never go backwards;
* ``stop`` flushes: ``stopped`` is sent only after the final of every utterance so far.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import SAMPLE_RATE, Config
from ..errors import ProtocolError
from . import protocol
from .audio import PcmDecoder, level
from .segmenter import Cut, Segmenter, VadFn
from .wire import Job, Priority


class State(enum.Enum):
    IDLE = "idle"  # waiting for start
    STREAMING = "streaming"
    STOPPING = "stopping"  # stop received; finals still outstanding


class Session:
    """The protocol state of one WebSocket connection.

    Args:
        session_id: unique id; every job id starts with it, so results can be routed back.
        config: the pipeline's config (segmenter settings and beam sizes are used).
        vad_factory: makes a fresh per-stream VAD function for each ``start``.
    """

    def __init__(self, session_id: str, config: Config, vad_factory: Callable[[], VadFn]) -> None:
        self.id = session_id
        self.config = config
        self.vad_factory = vad_factory
        self.state = State.IDLE
        self.start: protocol.Start | None = None
        self.segmenter: Segmenter | None = None
        self.decoder: PcmDecoder | None = None
        self._messages: list[dict[str, Any]] = []
        self._jobs: list[Job] = []
        self._next_utterance = 0  # ids keep growing across start/stop, so they never repeat
        self._next_final = 0  # the next utterance whose final may be sent
        self._finals: dict[int, dict[str, Any]] = {}  # finals that arrived early, held for order
        self._spans: dict[int, tuple[int, int]] = {}  # utterance -> (start, end) samples, until final
        self._partial_seq: dict[int, int] = {}  # utterance -> newest partial sequence sent
        self._job_seq = 0
        self._texts: dict[int, str] = {}  # recent utterances' final text, for context
        self._partial_ends: dict[int, dict[int, int]] = {}  # utterance -> {job seq: end sample}
        self._level_due = 0
        self._level_every = config.server.level_interval_ms * SAMPLE_RATE // 1000
        self.audio_samples = 0  # 16 kHz samples received in this stream

    # -- input -------------------------------------------------------------------------

    def receive_text(self, text: str) -> None:
        try:
            message = protocol.parse(text)
        except ProtocolError as exc:
            self._error(exc.code, exc.message)
            return
        if isinstance(message, protocol.Ping):
            self._messages.append(protocol.pong())
        elif isinstance(message, protocol.Start):
            self._on_start(message)
        else:
            self._on_stop()

    def receive_bytes(self, data: bytes) -> None:
        if self.state is not State.STREAMING:
            self._error("not_started", 'send {"action":"start"} before audio' if self.state is State.IDLE
                        else "audio after stop is ignored; send start to begin a new stream")
            return
        assert self.decoder is not None
        try:
            samples = self.decoder.decode(data)
        except ProtocolError as exc:
            self._error(exc.code, exc.message)
            return
        self._feed(samples)

    def receive_result(self, header: dict[str, Any]) -> None:
        """A worker's answer (or the dispatcher's failure notice) for one of our jobs."""
        try:
            _, utt_s, kind = str(header["job_id"]).rsplit(":", 2)
            utterance = int(utt_s)
        except (KeyError, ValueError):
            return
        if kind.startswith("p"):
            self._on_partial(utterance, int(kind[1:]), header)
        elif kind == "f":
            self._on_final(utterance, header)

    def close(self) -> None:
        """The connection is gone: forget everything outstanding."""
        self._jobs.clear()
        self._messages.clear()

    # -- output ------------------------------------------------------------------------

    def messages_to_send(self) -> list[dict[str, Any]]:
        out, self._messages = self._messages, []
        return out

    def jobs_to_send(self) -> list[Job]:
        out, self._jobs = self._jobs, []
        return out

    @property
    def outstanding(self) -> int:
        """Utterances whose final has not been sent yet."""
        return len(self._spans)

    # -- transitions ---------------------------------------------------------------------

    def _on_start(self, start: protocol.Start) -> None:
        if self.state is not State.IDLE:
            self._error("already_started", "a stream is already running; send stop first")
            return
        self.start = start
        self.decoder = PcmDecoder(start.format, start.sample_rate)
        workers = self.config.workers
        self.segmenter = Segmenter(
            self.config.segmenter, self.vad_factory(), partials=start.partials, first_utterance_id=self._next_utterance,
            retain_utterances=workers.context_utterances, retain_s=workers.context_max_s,
        )
        self.audio_samples = 0
        self._texts.clear()
        self._level_due = self._level_every
        self.state = State.STREAMING
        self._messages.append(protocol.status("ready"))

    def _on_stop(self) -> None:
        if self.state is not State.STREAMING:
            self._error("not_started", "stop without a running stream")
            return
        assert self.decoder is not None and self.segmenter is not None
        self._feed(self.decoder.flush())
        self._submit(self.segmenter.flush())
        self.state = State.STOPPING
        self._maybe_stopped()

    def _feed(self, samples: np.ndarray) -> None:
        assert self.segmenter is not None
        self.audio_samples += len(samples)
        if self.audio_samples >= self._level_due and len(samples):
            self._level_due = self.audio_samples + self._level_every
            self._messages.append(protocol.level(level(samples)))
        self._submit(self.segmenter.feed(samples))

    def _submit(self, cuts: list[Cut]) -> None:
        assert self.start is not None and self.segmenter is not None
        self._next_utterance = self.segmenter.next_id
        workers = self.config.workers
        for cut in cuts:
            self._spans[cut.utterance_id] = (cut.start, cut.end)
            final = cut.kind == "final"
            self._job_seq += 1
            if not final:
                self._partial_ends.setdefault(cut.utterance_id, {})[self._job_seq] = cut.end
            context_start, prefix = self._context(cut)
            self._jobs.append(
                Job(
                    job_id=f"{self.id}:{cut.utterance_id}:{'f' if final else f'p{self._job_seq}'}",
                    priority=Priority.FINAL if final else Priority.PARTIAL,
                    audio=self.segmenter.audio(context_start, cut.end) if prefix else cut.audio,
                    options={
                        "language": self.start.language,
                        "beam_size": workers.beam_size if final else workers.partial_beam_size,
                        "word_timestamps": final and self.start.words,
                        "prefix": prefix,
                        "context_s": round((cut.start - context_start) / SAMPLE_RATE, 4) if prefix else 0.0,
                    },
                    key=f"{self.id}:{cut.utterance_id}",
                )
            )

    def _context(self, cut: Cut) -> tuple[int, str]:
        """The earlier utterances to decode this one with: (audio start, their text).

        Only an unbroken run of the utterances just before this one, whose finals are
        known and not empty, within ``context_max_s`` and with the whole under 29 s.
        """
        assert self.segmenter is not None
        workers = self.config.workers
        start, texts = cut.start, []
        want = cut.utterance_id - 1
        earlier = [f for f in self.segmenter.finished if f[0] < cut.utterance_id]
        for uid, u_start, _ in reversed(earlier[-workers.context_utterances:] if workers.context_utterances else []):
            text = self._texts.get(uid, "")
            if (uid != want or not text or u_start < self.segmenter.buffer.start
                    or cut.start - u_start > workers.context_max_s * SAMPLE_RATE
                    or cut.end - u_start > 29 * SAMPLE_RATE):
                break
            start, want = u_start, want - 1
            texts.insert(0, text)
        return start, " ".join(texts)

    def _on_partial(self, utterance: int, seq: int, header: dict[str, Any]) -> None:
        span = self._spans.get(utterance)
        if span is None or utterance in self._finals or seq <= self._partial_seq.get(utterance, 0):
            return  # its final is known, or a newer partial was already sent
        if header.get("error"):
            return  # a lost partial is harmless; the final will come
        self._partial_seq[utterance] = seq
        start, _ = span
        end = self._partial_ends.get(utterance, {}).pop(seq, start)
        self._messages.append(
            protocol.transcript("partial", utterance, str(header.get("text", "")), start / SAMPLE_RATE, end / SAMPLE_RATE)
        )

    def _on_final(self, utterance: int, header: dict[str, Any]) -> None:
        span = self._spans.get(utterance)
        if span is None or utterance in self._finals:
            return  # a duplicate answer: exactly one final per utterance
        start, end = span
        if header.get("error"):
            self._error("asr_failed", f"utterance {utterance} could not be transcribed: {header['error']}")
        words = None
        if self.start is not None and self.start.words:
            offset = start / SAMPLE_RATE
            words = [
                {"word": w["word"], "start": round(w["start"] + offset, 3), "end": round(w["end"] + offset, 3),
                 "probability": w.get("probability")}
                for w in header.get("words") or []
            ]
        self._finals[utterance] = protocol.transcript(
            "final", utterance, str(header.get("text", "")), start / SAMPLE_RATE, end / SAMPLE_RATE, words
        )
        while self._next_final in self._finals:
            message = self._finals.pop(self._next_final)
            self._messages.append(message)
            self._texts[self._next_final] = message["text"]
            self._texts.pop(self._next_final - 8, None)
            self._spans.pop(self._next_final, None)
            self._partial_seq.pop(self._next_final, None)
            self._partial_ends.pop(self._next_final, None)
            self._next_final += 1
        self._maybe_stopped()

    def _maybe_stopped(self) -> None:
        if self.state is State.STOPPING and not self._spans:
            self.state = State.IDLE
            self._messages.append(protocol.status("stopped"))

    def _error(self, code: str, message: str) -> None:
        self._messages.append(protocol.error(code, message))

