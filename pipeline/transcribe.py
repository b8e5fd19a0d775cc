"""``pipeline transcribe``: recordings through the worker pool, back in order, with timestamps.

For each file: decode it with PyAV (any format it reads), cut it at silences with the
live segmenter, pack the utterances into chunks (:mod:`pipeline.core.batch`) and send
the chunks as BATCH jobs to a dispatcher, either a pool spawned for the run or a running
``pipeline run`` (``--connect``), where they wait behind live streams' work. When a file's
last chunk is back, its outputs are written, each atomically (a temporary file renamed
into place), so an interrupted run leaves whole files or none and ``--skip-existing``
picks up where it stopped.

Cutting a file (decoding and VAD) runs in a thread and hands chunks over as it finds
them, so the workers start on a long file at once; a few files are held ahead and no
more, to bound memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from . import formats
from .config import SAMPLE_RATE, Config
from .core import wire
from .core.batch import BatchPlan, Chunk, ChunkPacker, segments_from_words
from .errors import AudioError, PipelineError

log = logging.getLogger("pipeline.transcribe")

#: Files a folder is searched for; a file named on the command line is always tried.
MEDIA_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".wma", ".webm", ".mp4",
                  ".mkv", ".mov", ".avi", ".aif", ".aiff", ".amr", ".3gp", ".caf"}
CLIENT_ENDPOINT = "inproc://batch"


@dataclass(frozen=True)
class Input:
    """A file to transcribe; its outputs are ``<out>/<name>.<format>``."""

    path: Path
    name: Path


@dataclass
class Outcome:
    """What became of one input."""

    input: Input
    status: str = "pending"  # done, skipped, failed, interrupted
    duration_s: float = 0.0
    reason: str = ""
    chunks: int = 0
    words: int = 0


@dataclass
class Options:
    """What the user asked for."""

    out_dir: Path | None = None  # None: next to each input file
    formats: tuple[str, ...] = ("txt",)
    language: str = "en"
    word_timestamps: bool = False
    skip_existing: bool = False
    parallel: int = 2


def find_inputs(paths: Iterable[str]) -> tuple[list[Input], list[Outcome]]:
    """Expand files and folders (recursively) into inputs, in a stable order.

    Returns:
        The inputs, and failed outcomes for paths that do not exist or whose output
        name another input already has.
    """
    inputs: list[Input] = []
    problems: list[Outcome] = []
    seen: dict[Path, Path] = {}
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            pairs = [(p, p.relative_to(root).with_suffix("")) for p in found]
        elif root.is_file():
            pairs = [(root, Path(root.stem))]
        else:
            problems.append(Outcome(Input(root, Path(root.name)), "failed", reason="no such file or folder"))
            continue
        for path, name in pairs:
            if name in seen:
                if seen[name].resolve() != path.resolve():
                    problems.append(Outcome(Input(path, name), "failed",
                                            reason=f"its outputs would overwrite those of {seen[name]}"))
                continue
            seen[name] = path
            inputs.append(Input(path, name))
    return inputs, problems


def output_paths(item: Input, options: Options) -> list[Path]:
    base = (options.out_dir / item.name) if options.out_dir is not None else item.path.with_suffix("")
    return [base.with_name(base.name + "." + fmt) for fmt in options.formats]


def probe_duration(path: Path) -> float:
    """Duration from the container's metadata (no decoding), or 0 if it does not say."""
    try:
        import av

        with av.open(str(path), metadata_errors="ignore") as container:
            if container.duration:
                return float(container.duration) / 1_000_000
            stream = next(iter(container.streams.audio), None)
            if stream is not None and stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
    except Exception:  # noqa: BLE001 - a bad file is reported when it is decoded
        pass
    return 0.0


def chunk_audio(audio: np.ndarray, chunk: Chunk) -> np.ndarray:
    """A chunk's samples: its pieces of the file, end to end."""
    parts = [audio[p.start : p.end] for p in chunk.pieces]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def prepare(path: Path, config: Config, emit: Callable[[str, Any], None], cancelled: threading.Event) -> None:
    """Decode ``path`` and cut it into chunks, emitting them as the VAD finds them.

    Runs in a thread. Emits ``("audio", samples)`` once, then ``("chunks", [...])`` as
    they close, then ``("end", [...])``; or ``("error", reason)``. Emitting chunks as
    they are found lets the workers start on a long file while it is still being cut.
    """
    from faster_whisper.audio import decode_audio

    from .core.segmenter import Segmenter
    from .vad import SileroStream

    try:
        try:
            audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE)
        except Exception as exc:  # PyAV raises many kinds; all mean the same to the user
            raise AudioError(f"cannot decode: {type(exc).__name__}: {exc}") from None
        if not len(audio):
            raise AudioError("no audio in the file")
        emit("audio", audio)
        segmenter = Segmenter(config.segmenter, SileroStream(), partials=False)
        packer = ChunkPacker(config.batch.max_chunk_s, config.batch.max_gap_s)
        block = 10 * SAMPLE_RATE
        for i in range(0, len(audio), block):
            if cancelled.is_set():
                return
            chunks = [c for cut in segmenter.feed(audio[i : i + block]) if cut.kind == "final"
                      for c in packer.add(cut.start, cut.end)]
            if chunks:
                emit("chunks", chunks)
        chunks = [c for cut in segmenter.flush() if cut.kind == "final" for c in packer.add(cut.start, cut.end)]
        emit("end", chunks + packer.flush())
    except AudioError as exc:
        emit("error", str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
        log.exception("preparing %s failed", path)
        emit("error", f"{type(exc).__name__}: {exc}")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it private; a transcript is an ordinary file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class _Active:
    """A file being cut or decoded."""

    index: int
    outcome: Outcome
    audio: np.ndarray | None = None
    cutting: bool = True  # its preparation thread is still running
    credited_s: float = 0.0  # audio seconds already shown as done


class Transcriber:
    """Sends the chunks of many files to a dispatcher and writes the transcripts.

    Args:
        config: chunking ([batch], [segmenter]) and decoding ([workers]) settings.
        options: outputs and decoding choices.
        ctx: the ZeroMQ context to connect with.
        endpoint: the dispatcher's client endpoint.
        on_progress: called with (outcome or None, audio seconds newly done) as work completes.
    """

    #: Files cut at once. Two, so a second file is ready when the first one's chain waits.
    CUTTING = 2

    def __init__(self, config: Config, options: Options, ctx: zmq.asyncio.Context, endpoint: str,
                 on_progress: Callable[[Outcome | None, float], None] | None = None) -> None:
        self.config = config
        self.options = options
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.sndhwm = self.sock.rcvhwm = 1000
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self.plan = BatchPlan(options.parallel, config.batch.prompt_chars)
        self.on_progress = on_progress or (lambda outcome, seconds: None)
        self.run_id = f"t{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self._active: dict[int, _Active] = {}
        from .vad import warm_up

        warm_up()  # load the VAD model now, not on the first file

    async def run(self, inputs: list[Input], stop: asyncio.Event | None = None) -> list[Outcome]:
        """Transcribe ``inputs``; returns one outcome per input, in order."""
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        cancelled = threading.Event()
        events: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()
        outcomes = [Outcome(item) for item in inputs]
        todo: list[int] = []
        for i, outcome in enumerate(outcomes):
            if self.options.skip_existing and all(p.exists() for p in output_paths(outcome.input, self.options)):
                outcome.status = "skipped"
                self.on_progress(outcome, 0.0)
            else:
                todo.append(i)
        active = self._active
        threads: list[asyncio.Future[None]] = []

        def emitter(index: int) -> Callable[[str, Any], None]:
            def emit(kind: str, value: Any) -> None:
                if not cancelled.is_set():
                    with contextlib.suppress(RuntimeError):  # the loop closed under us
                        loop.call_soon_threadsafe(events.put_nowait, (index, kind, value))
            return emit

        receiver = asyncio.ensure_future(self.sock.recv_multipart())
        stopper = asyncio.ensure_future(stop.wait())
        getter = asyncio.ensure_future(events.get())
        last_reply = time.monotonic()
        try:
            while todo or active:
                cutting = sum(a.cutting for a in active.values())
                while todo and cutting < self.CUTTING and len(active) < self.options.parallel + 1:
                    index = todo.pop(0)
                    active[index] = _Active(index, outcomes[index])
                    threads.append(asyncio.ensure_future(asyncio.to_thread(
                        prepare, outcomes[index].input.path, self.config, emitter(index), cancelled)))
                    cutting += 1
                for file, chunk, prompt in self.plan.take(allow_split=not todo and not cutting):
                    self._send(file, chunk, prompt)
                if not self.plan.in_flight:
                    last_reply = time.monotonic()
                timeout = self.config.batch.reply_timeout_s - (time.monotonic() - last_reply)
                done, _ = await asyncio.wait({receiver, stopper, getter}, timeout=max(0.0, timeout),
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    break
                if not done:
                    raise PipelineError(f"no reply from {self.endpoint} in {self.config.batch.reply_timeout_s:.0f} s "
                                        f"with {self.plan.in_flight} chunk(s) out")
                if getter in done:
                    self._on_event(*getter.result())
                    getter = asyncio.ensure_future(events.get())
                if receiver in done:
                    last_reply = time.monotonic()
                    self._on_reply(receiver.result())
                    receiver = asyncio.ensure_future(self.sock.recv_multipart())
        finally:
            cancelled.set()
            if todo or self._active:  # stopped early: what is still queued is for no one
                with contextlib.suppress(zmq.ZMQError):
                    await self.sock.send_multipart(wire.encode(wire.Command.CANCEL, {"prefix": self.run_id + ":"}),
                                                   flags=zmq.NOBLOCK)
            for task in (receiver, stopper, getter):
                task.cancel()
            await asyncio.gather(receiver, stopper, getter, *threads, return_exceptions=True)
            self.sock.close(linger=0)
        for outcome in outcomes:
            if outcome.status == "pending":
                outcome.status, outcome.reason = "interrupted", "the run stopped before this file was done"
        return outcomes

    def _on_event(self, index: int, kind: str, value: Any) -> None:
        """Progress of a file being cut."""
        item = self._active.get(index)
        if item is None:
            return
        if kind == "audio":
            item.audio = value
            item.outcome.duration_s = len(value) / SAMPLE_RATE
            self.plan.add(index, [], complete=False)
            return
        if kind == "chunks":
            self.plan.extend(index, value, complete=False)
            return
        item.cutting = False
        if kind == "end":
            self.plan.extend(index, value, complete=True)
            item.outcome.chunks = len(self.plan.files[index].chunks)
        elif index in self.plan.files:  # an error after the audio was decoded
            self.plan.abandon(index, str(value))
        else:
            del self._active[index]
            self._fail(item.outcome, str(value))
            return
        if self.plan.finished(index):  # no speech at all, or every chunk already back
            self._finish(item)

    def _send(self, file: int, chunk: Chunk, prompt: str) -> None:
        audio = self._active[file].audio
        assert audio is not None
        options: dict[str, Any] = {"batch": True, "language": self.options.language,
                                   "beam_size": self.config.workers.beam_size}
        if prompt:
            options["prompt"] = prompt
        job = wire.Job(f"{self.run_id}:{file}:{chunk.index}", wire.Priority.BATCH, chunk_audio(audio, chunk), options)
        self.sock.send_multipart(wire.encode_job(job), copy=False)

    def _on_reply(self, frames: list[bytes]) -> None:
        try:
            command, header, _ = wire.decode(frames)
            _, file_s, index_s = str(header.get("job_id", "")).rsplit(":", 2)
            file, index = int(file_s), int(index_s)
        except (PipelineError, ValueError) as exc:
            log.warning("dropped a malformed reply: %s", exc)
            return
        item = self._active.get(file)
        if command is not wire.Command.RESULT or item is None or not self.plan.is_out(file, index):
            return  # not ours, or a duplicate
        plan = self.plan.files[file]
        if header.get("error"):
            self.plan.failed(file, index, str(header["error"]))
        else:
            self.plan.done(file, index, str(header.get("text", "")), list(header.get("words") or []))
            covered = plan.chunks[index].end / SAMPLE_RATE - (plan.chunks[index - 1].end / SAMPLE_RATE if index else 0.0)
            item.credited_s += covered
            self.on_progress(None, covered)
        if not item.cutting and self.plan.finished(file):
            self._finish(item)

    def _finish(self, item: _Active) -> None:
        del self._active[item.index]
        plan = self.plan.files[item.index]
        outcome = item.outcome
        self.plan.forget(item.index)
        remaining = max(0.0, outcome.duration_s - item.credited_s)
        if plan.error is not None:
            self._fail(outcome, plan.error, remaining)
            return
        segments = [s for i, chunk in enumerate(plan.chunks) for s in segments_from_words(chunk, plan.words.get(i, []))]
        outcome.words = sum(len(s["words"]) for s in segments)
        try:
            for fmt, path in zip(self.options.formats, output_paths(outcome.input, self.options)):
                write_atomically(path, formats.render(fmt, str(outcome.input.path), outcome.duration_s, segments,
                                                      self.options.word_timestamps, self.config.workers.model))
        except OSError as exc:
            self._fail(outcome, f"cannot write its output: {exc.strerror or exc}", remaining)
            return
        outcome.status = "done"
        self.on_progress(outcome, remaining)

    def _fail(self, outcome: Outcome, reason: str, remaining_s: float = 0.0) -> None:
        outcome.status, outcome.reason = "failed", reason
        self.on_progress(outcome, remaining_s)


async def transcribe(config: Config, inputs: list[Input], options: Options, connect: str | None,
                     on_progress: Callable[[Outcome | None, float], None] | None = None,
                     stop: asyncio.Event | None = None) -> list[Outcome]:
    """Transcribe on a pool spawned for the run, or on the dispatcher at ``connect``."""
    from .service import local_pool

    ctx = zmq.asyncio.Context()
    try:
        if connect:
            return await Transcriber(config, options, ctx, connect, on_progress).run(inputs, stop)
        async with local_pool(config, ctx, CLIENT_ENDPOINT):
            return await Transcriber(config, options, ctx, CLIENT_ENDPOINT, on_progress).run(inputs, stop)
    finally:
        ctx.destroy(linger=0)


