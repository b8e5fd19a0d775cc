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
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import SAMPLE_RATE, Config
from ..errors import ProtocolError
from . import protocol
from .audio import PcmDecoder, level
from .segmenter import Cut, Segmenter, VadFn
from .wire import Job, Priority


@dataclass
class _Held:
    """A cut with the audio of the utterances that may serve as its context."""

    cut: Cut
    seq: int
    start: int  # stream sample where ``audio`` starts
    audio: np.ndarray
    earlier: list[tuple[int, int]]  # (utterance id, start sample) of candidate context, oldest first


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
        self._finals: dict[int, dict[str, Any] | None] = {}  # finals that arrived early, held for order
        self._spans: dict[int, tuple[int, int]] = {}  # utterance -> (start, end) samples, until final
        self._partial_seq: dict[int, int] = {}  # utterance -> newest partial sequence sent
        self._job_seq = 0
        self._texts: dict[int, str] = {}  # recent utterances' final text, for context
        self._partial_ends: dict[int, dict[int, int]] = {}  # utterance -> {job seq: end sample}
        self._held: dict[int, _Held] = {}  # finals waiting for the text of the one before
        self._partial_in_flight: set[int] = set()  # utterances with a partial being decoded
        self._committed: dict[int, str] = {}  # utterance -> text its final must start with (pin)
        self._final_made: set[int] = set()  # utterances whose final job exists: pins are closed
        self.partials_skipped = 0
        self._level_due = 0
        self._level_every = config.server.level_interval_ms * SAMPLE_RATE // 1000
        self.audio_samples = 0  # 16 kHz samples received in this stream
        self._boundaries: list[tuple[str, int, float]] = []  # ("start" | "end", utterance, seconds)
        self._started: set[int] = set()

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

    def error_message(self, code: str, message: str) -> dict[str, Any]:
        """An error in this protocol's shape, for what the I/O layer enforces (limits)."""
        return protocol.error(code, message)

    def finish(self) -> None:
        """Stop the stream on the server's behalf (shutdown, a limit): flush its finals."""
        if self.state is State.STREAMING:
            self.receive_text('{"action":"stop"}')

    def commit(self) -> int | None:
        """End the open utterance now, as if silence had come (the client says so).

        Returns:
            The utterance's id, or None if no speech was open.
        """
        if self.state is not State.STREAMING:
            return None
        assert self.decoder is not None and self.segmenter is not None
        self._feed(self.decoder.flush())
        cuts = self.segmenter.flush()
        self._submit(cuts)
        return cuts[-1].utterance_id if cuts else None

    def clear(self) -> int | None:
        """Drop the open utterance: no final, and its partials are dropped. Returns its id."""
        if self.state is not State.STREAMING:
            return None
        assert self.segmenter is not None
        utterance = self.segmenter.discard()
        if utterance is not None:
            self._finals[utterance] = None  # released in order like a final, but sends nothing
            self._spans.setdefault(utterance, (0, 0))
            self._on_final_released()
        return utterance

    def pin(self, utterance: int, text: str) -> bool:
        """Promise the client that ``utterance``'s final starts with ``text``.

        ``/v1/realtime`` sends text as deltas that can only append; pinning it before it
        is sent makes the final decode continue from it (forced as the decoder's prefix),
        so the deltas are a prefix of the transcript by construction. Returns False, and
        pins nothing, once the final's job is made: what was pinned then is what it holds.
        """
        if utterance in self._final_made or utterance in self._finals or utterance not in self._spans:
            return False
        self._committed[utterance] = " ".join(text.split())
        return True

    def take_boundaries(self) -> list[tuple[str, int, float]]:
        """Where utterances started and ended (seconds of stream), since the last call."""
        out, self._boundaries = self._boundaries, []
        return out

    def close(self) -> None:
        """The connection is gone: forget everything outstanding."""
        self._held.clear()
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
        assert self.segmenter is not None
        self._next_utterance = self.segmenter.next_id
        for cut in cuts:
            if cut.utterance_id not in self._started:
                self._started.add(cut.utterance_id)
                self._boundaries.append(("start", cut.utterance_id, cut.start / SAMPLE_RATE))
            if cut.kind == "final":
                self._started.discard(cut.utterance_id)
                self._boundaries.append(("end", cut.utterance_id, cut.end / SAMPLE_RATE))
            if cut.kind == "partial" and cut.utterance_id in self._partial_in_flight:
                # One partial per utterance at a time: when workers are busy, partials come
                # as fast as they are decoded, and no faster (docs/architecture.md).
                self.partials_skipped += 1
                continue
            self._spans[cut.utterance_id] = (cut.start, cut.end)
            self._job_seq += 1
            if cut.kind == "partial":
                self._partial_in_flight.add(cut.utterance_id)
                self._partial_ends.setdefault(cut.utterance_id, {})[self._job_seq] = cut.end
            held = _Held(cut, self._job_seq, *self._context_audio(cut))
            if cut.kind == "final" and self.config.workers.context_utterances and (cut.utterance_id - 1) in self._spans:
                # The final before this one is still being decoded: wait for its text, so that
                # this final is decoded in context whatever the pace (it could not be sent
                # to the client before that one anyway). Partials never wait.
                self._held[cut.utterance_id] = held
            else:
                self._jobs.append(self._job(held))

    def _context_audio(self, cut: Cut) -> tuple[int, np.ndarray, list[tuple[int, int]]]:
        """Audio from the earliest utterance that may serve as context, and those utterances.

        Taken now, while the segmenter still holds it; which of them are used is decided
        when the job is made, from the texts known then.
        """
        assert self.segmenter is not None
        workers = self.config.workers
        earlier = [(uid, start) for uid, start, _ in self.segmenter.finished if uid < cut.utterance_id]
        earlier = [(uid, start) for uid, start in earlier[-workers.context_utterances:] if workers.context_utterances
                   and start >= self.segmenter.buffer.start
                   and cut.start - start <= workers.context_max_s * SAMPLE_RATE
                   and cut.end - start <= 29 * SAMPLE_RATE]
        if not earlier:
            return cut.start, cut.audio, []
        start = earlier[0][1]
        return start, self.segmenter.audio(start, cut.end), earlier

    def _job(self, held: _Held) -> Job:
        """The job for a cut, in the context of the earlier utterances whose text is known.

        Context is an unbroken run of the utterances just before this one, with known,
        non-empty finals.
        """
        assert self.start is not None
        cut, workers = held.cut, self.config.workers
        final = cut.kind == "final"
        texts: list[str] = []
        start, want = cut.start, cut.utterance_id - 1
        for uid, u_start in reversed(held.earlier):
            text = self._texts.get(uid, "")
            if uid != want or not text:
                break
            start, want = u_start, want - 1
            texts.insert(0, text)
        options: dict[str, Any] = {
            "language": self.start.language,
            "beam_size": workers.beam_size if final else workers.partial_beam_size,
            "window": workers.encoder_window if final else workers.partial_encoder_window,
            "window_floor_s": workers.window_floor_s if final else workers.partial_window_floor_s,
            "word_timestamps": final and self.start.words,
            "prefix": " ".join(texts),
            "context_s": round((cut.start - start) / SAMPLE_RATE, 4),
            "fallback": final,  # partials are superseded anyway: no second decode for them
        }
        if final:
            self._final_made.add(cut.utterance_id)
            if committed := self._committed.get(cut.utterance_id):
                options["committed"] = committed
        return Job(
            job_id=f"{self.id}:{cut.utterance_id}:{'f' if final else f'p{held.seq}'}",
            priority=Priority.FINAL if final else Priority.PARTIAL,
            audio=held.audio[start - held.start :],
            options=options,
            key=f"{self.id}:{cut.utterance_id}",
        )

    def _on_partial(self, utterance: int, seq: int, header: dict[str, Any]) -> None:
        self._partial_in_flight.discard(utterance)  # there is only ever one
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
            self._messages.append({**protocol.error("asr_failed", f"utterance {utterance} could not be transcribed: "
                                                                  f"{header['error']}"), "utterance_id": utterance})
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
        self._on_final_released()

    def _on_final_released(self) -> None:
        """Send the finals now due, in order; a cleared utterance (None) sends nothing."""
        while self._next_final in self._finals:
            message = self._finals.pop(self._next_final)
            if message is not None:
                self._messages.append(message)
                self._texts[self._next_final] = message["text"]
            self._texts.pop(self._next_final - 8, None)
            self._spans.pop(self._next_final, None)
            self._partial_seq.pop(self._next_final, None)
            self._partial_ends.pop(self._next_final, None)
            self._partial_in_flight.discard(self._next_final)
            self._committed.pop(self._next_final, None)
            self._final_made.discard(self._next_final)
            self._next_final += 1
            if (held := self._held.pop(self._next_final, None)) is not None:
                self._jobs.append(self._job(held))
        self._maybe_stopped()

    def _maybe_stopped(self) -> None:
        if self.state is State.STOPPING and not self._spans:
            self.state = State.IDLE
            self._messages.append(protocol.status("stopped"))

    def _error(self, code: str, message: str) -> None:
        self._messages.append(protocol.error(code, message))

