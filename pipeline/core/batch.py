"""Batch transcription of files, without I/O: chunk planning, job order and timestamps.

A recording is cut into utterances by the same segmenter as live streams. Utterances are
then packed into **chunks** of at most ``max_chunk_s`` (Whisper sees 30 s at a time), with
the pauses between them shortened to at most ``max_gap_s``: a file that is 40 % silence
then needs 40 % fewer decodes, and the decoder still hears a pause between sentences.
Each chunk keeps its **pieces** (where each stretch of its audio came from in the file),
so that times the worker reports on the chunk map back to the file.

Chunks of one file form **chains**: a chunk is decoded with the text of the chunk before
it as the prompt, so it must wait for that text. :class:`BatchPlan` decides which chunk
to send next: the next chunk of a chain whose last text is known; else a new file; else
it splits the longest unstarted run of some file in two, so that a single long file
still keeps every worker busy (the split chunk is decoded without a prompt).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import SAMPLE_RATE

#: A word whose end ends a sentence may end a subtitle cue.
SENTENCE_END = (".", "?", "!", "。", "？", "！")


@dataclass(frozen=True)
class Piece:
    """``end - start`` samples of the file, found at ``offset`` in the chunk's audio."""

    offset: int
    start: int
    end: int


@dataclass
class Chunk:
    """One decode: file samples taken piece by piece, gaps shortened."""

    index: int
    pieces: list[Piece]

    @property
    def length(self) -> int:
        last = self.pieces[-1]
        return last.offset + last.end - last.start

    @property
    def start(self) -> int:
        return self.pieces[0].start

    @property
    def end(self) -> int:
        return self.pieces[-1].end

    def piece_at(self, t_s: float) -> int:
        """Index of the piece holding chunk time ``t_s`` (the nearest one in a gap)."""
        offsets = [p.offset for p in self.pieces]
        return max(0, bisect.bisect_right(offsets, round(t_s * SAMPLE_RATE)) - 1)

    def file_time(self, t_s: float, piece: int | None = None) -> float:
        """Map a time on the chunk's audio to the file, clamped into its piece."""
        p = self.pieces[self.piece_at(t_s) if piece is None else piece]
        sample = p.start + round(t_s * SAMPLE_RATE) - p.offset
        return min(max(sample, p.start), p.end) / SAMPLE_RATE


class ChunkPacker:
    """Packs utterance spans (file samples, in order) into chunks, as they are found.

    Each piece starts up to ``max_gap_s`` before its utterance (the real silence there,
    never before the previous utterance's end), so that the decoder hears a pause. An
    utterance longer than a chunk is cut (the segmenter already caps them below 30 s).
    """

    def __init__(self, max_chunk_s: float, max_gap_s: float) -> None:
        self.limit = int(max_chunk_s * SAMPLE_RATE)
        self.gap = int(max_gap_s * SAMPLE_RATE)
        self.count = 0
        self._pieces: list[Piece] = []
        self._length = 0
        self._prev_end: int | None = None

    def add(self, span_start: int, span_end: int) -> list[Chunk]:
        """Add one utterance; returns the chunks it closed."""
        closed: list[Chunk] = []
        for start in range(span_start, span_end, self.limit):
            end = min(start + self.limit, span_end)
            lead = 0 if self._prev_end is None else max(0, min(self.gap, start - self._prev_end))
            if self._pieces and self._length + lead + end - start > self.limit:
                closed += self.flush()
            if not self._pieces:
                lead = 0
            self._pieces.append(Piece(self._length, start - lead, end))
            self._length += lead + end - start
            self._prev_end = end
        return closed

    def flush(self) -> list[Chunk]:
        """Close the open chunk, if any."""
        if not self._pieces:
            return []
        chunk = Chunk(self.count, self._pieces)
        self.count += 1
        self._pieces, self._length = [], 0
        return [chunk]


def plan_chunks(spans: Iterable[tuple[int, int]], max_chunk_s: float, max_gap_s: float) -> list[Chunk]:
    """All the chunks of a file whose utterance spans are known."""
    packer = ChunkPacker(max_chunk_s, max_gap_s)
    chunks = [c for start, end in spans for c in packer.add(start, end)]
    return chunks + packer.flush()


def segments_from_words(chunk: Chunk, words: list[dict[str, Any]], max_segment_s: float = 10.0) -> list[dict[str, Any]]:
    """Turn a chunk's aligned words (chunk times) into file-time segments.

    A segment never spans two utterances (pieces), so cues follow the speaker's pauses;
    a long utterance is split after a word that ends a sentence, or at ``max_segment_s``.
    """
    segments: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    current_piece = -1
    for w in words:
        mid = (float(w["start"]) + float(w["end"])) / 2
        piece = chunk.piece_at(mid)
        start, end = chunk.file_time(float(w["start"]), piece), chunk.file_time(float(w["end"]), piece)
        word = {**w, "start": round(start, 3), "end": round(max(end, start), 3)}
        if current and (piece != current_piece
                        or word["end"] - current[0]["start"] > max_segment_s
                        or (str(current[-1]["word"]).endswith(SENTENCE_END)
                            and current[-1]["end"] - current[0]["start"] >= max_segment_s / 3)):
            segments.append(_segment(current))
            current = []
        current.append(word)
        current_piece = piece
    if current:
        segments.append(_segment(current))
    return segments


def _segment(words: list[dict[str, Any]]) -> dict[str, Any]:
    text = " ".join(str(w["word"]) for w in words)
    return {"start": words[0]["start"], "end": words[-1]["end"], "text": text, "words": words}


@dataclass
class _Chain:
    """Consecutive chunks of one file, decoded in order, each prompted with the last text."""

    file: int
    next: int  # next chunk index to send
    stop: int  # one past the last chunk of this chain
    waiting: bool = False  # a chunk of it is being decoded


@dataclass
class FilePlan:
    """A file's chunks and their texts, as results arrive."""

    chunks: list[Chunk]
    complete: bool = True  # all its chunks are known
    texts: dict[int, str] = field(default_factory=dict)
    words: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or (self.complete and len(self.texts) == len(self.chunks))


class BatchPlan:
    """Which chunk of which file to decode next, keeping ``parallel`` jobs in flight.

    Files are added in the order they should finish (:meth:`add`); :meth:`take` returns
    jobs to send, :meth:`done` and :meth:`failed` report results. No I/O, no clock.

    Args:
        parallel: jobs to keep in flight (the workers' count is the useful value).
        prompt_chars: how much of the text before a chunk is sent as its prompt.
    """

    def __init__(self, parallel: int, prompt_chars: int = 800) -> None:
        self.parallel = max(1, parallel)
        self.prompt_chars = prompt_chars
        self.files: dict[int, FilePlan] = {}
        self._chains: list[_Chain] = []
        self._pending: list[int] = []  # files added but not started
        self._out: dict[int, set[int]] = {}  # chunks sent and not answered, by file
        self.in_flight = 0
        self.splits = 0

    def add(self, file: int, chunks: list[Chunk], complete: bool = True) -> None:
        """A file to transcribe, with the chunks known so far (more may follow: :meth:`extend`)."""
        self.files[file] = FilePlan(list(chunks), complete)
        self._pending.append(file)

    def extend(self, file: int, chunks: list[Chunk], complete: bool) -> None:
        """More chunks of a file, found while the first ones are being decoded."""
        plan = self.files.get(file)
        if plan is None or plan.error is not None:
            return
        old = len(plan.chunks)
        plan.chunks.extend(chunks)
        plan.complete = complete
        for chain in self._chains:
            if chain.file == file and chain.stop == old:
                chain.stop = len(plan.chunks)  # the file's last chain runs on into them

    def take(self, allow_split: bool = True) -> list[tuple[int, Chunk, str]]:
        """Jobs to send now: (file, chunk, prompt text).

        ``allow_split=False`` while more files are on their way: splitting a file costs a
        prompt, so it is the last resort, when nothing else could keep a worker busy.
        """
        out: list[tuple[int, Chunk, str]] = []
        while self.in_flight < self.parallel:
            job = self._next(allow_split)
            if job is None:
                break
            out.append(job)
            self.in_flight += 1
        return out

    def is_out(self, file: int, index: int) -> bool:
        """Whether that chunk was sent and is not answered yet (anything else is stale)."""
        return index in self._out.get(file, ())

    def outstanding(self, file: int) -> int:
        return len(self._out.get(file, ()))

    def forget(self, file: int) -> None:
        """Drop a finished file's texts and audio references."""
        self.files.pop(file, None)
        self._out.pop(file, None)

    def done(self, file: int, index: int, text: str, words: list[dict[str, Any]] | None = None) -> None:
        plan = self.files[file]
        plan.texts[index] = text
        plan.words[index] = words or []
        self._release(file, index)

    def failed(self, file: int, index: int, reason: str) -> None:
        """A chunk could not be decoded: the file fails, and its other chunks are dropped."""
        plan = self.files[file]
        self.abandon(file, f"chunk {index} at {plan.chunks[index].start / SAMPLE_RATE:.1f} s: {reason}")
        self._release(file, index)

    def abandon(self, file: int, reason: str) -> None:
        """Send nothing more of this file; chunks already out still come back."""
        plan = self.files[file]
        plan.error = plan.error or reason
        if file in self._pending:
            self._pending.remove(file)
        for c in self._chains:
            if c.file == file:
                c.stop = c.next
        self._drop_finished_chains()

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing left to send."""
        return self.in_flight == 0 and not self._pending and not self._chains

    def finished(self, file: int) -> bool:
        """All of the file's answers are in (or it failed and nothing of it is out)."""
        plan = self.files.get(file)
        return plan is not None and plan.done and not self._out.get(file)

    def _release(self, file: int, index: int) -> None:
        self._out.get(file, set()).discard(index)
        self.in_flight -= 1
        for chain in self._chains:
            if chain.file == file and chain.waiting and chain.next == index + 1:
                chain.waiting = False
                break
        self._drop_finished_chains()

    def _drop_finished_chains(self) -> None:
        def alive(c: _Chain) -> bool:
            plan = self.files.get(c.file)
            more_coming = plan is not None and not plan.complete and plan.error is None and c.stop == len(plan.chunks)
            return c.waiting or c.next < c.stop or more_coming

        self._chains = [c for c in self._chains if alive(c)]

    def _next(self, allow_split: bool) -> tuple[int, Chunk, str] | None:
        for chain in self._chains:
            if not chain.waiting and chain.next < chain.stop:
                return self._send(chain)
        while self._pending:
            file = self._pending.pop(0)
            chain = _Chain(file, 0, len(self.files[file].chunks))
            self._chains.append(chain)
            if chain.next < chain.stop:
                return self._send(chain)
        if not allow_split:
            return None
        # Every chain waits for a text: split the longest unstarted run in two.
        best = max((c for c in self._chains if c.waiting), key=lambda c: c.stop - c.next, default=None)
        if best is None or best.stop - best.next < 2:
            return None
        middle = best.next + (best.stop - best.next) // 2  # the chain's chunk in flight counts for its half
        chain = _Chain(best.file, middle, best.stop)
        best.stop = middle
        self._chains.append(chain)
        self.splits += 1
        return self._send(chain)

    def _send(self, chain: _Chain) -> tuple[int, Chunk, str]:
        plan = self.files[chain.file]
        index = chain.next
        chain.next += 1
        chain.waiting = True
        self._out.setdefault(chain.file, set()).add(index)
        # The prompt is the text just before the chunk, as far back as it is known
        # without a hole (a chunk of a split chain may not be decoded yet).
        texts: list[str] = []
        i, size = index - 1, 0
        while i >= 0 and i in plan.texts and size < self.prompt_chars:
            texts.insert(0, plan.texts[i])
            size += len(plan.texts[i]) + 1
            i -= 1
        prompt = " ".join(t for t in texts if t)[-self.prompt_chars:]
        return chain.file, plan.chunks[index], prompt
