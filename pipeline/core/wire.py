"""The ZeroMQ message schema between clients of the dispatcher, the dispatcher and workers.

Every message is a list of frames (after the ROUTER's identity envelope)::

    [PROTOCOL, command, header, *payload]

* ``PROTOCOL`` is ``b"STT1"``: the schema's tag and version. A peer that speaks another
  version is rejected instead of misread.
* ``command`` is one byte, named in :class:`Command`.
* ``header`` is UTF-8 JSON: an object with the command's fields.
* ``payload`` is at most one frame of raw little-endian float32 PCM at 16 kHz (jobs only),
  kept out of the JSON so that it is never copied into text (pyzmq's ``send_serialized``
  pattern: a small header frame plus one raw buffer frame).

Flows (see docs/architecture.md):

* client (ingest or ``pipeline transcribe``) → dispatcher: ``JOB``; dispatcher → client:
  ``RESULT``.
* worker → dispatcher: ``READY`` once its model is warm, then ``RESULT`` per job, and
  ``HEARTBEAT`` whenever it has sent nothing for an interval; ``DISCONNECT`` on shutdown.
* dispatcher → worker: ``JOB`` and ``HEARTBEAT``.

Decoding a malformed message raises :class:`~pipeline.errors.ProtocolError`; the
receiver logs it, counts it and drops it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ProtocolError

PROTOCOL = b"STT1"


class Command(bytes, enum.Enum):
    """One-byte commands of the schema."""

    READY = b"\x01"
    JOB = b"\x02"
    RESULT = b"\x03"
    HEARTBEAT = b"\x04"
    DISCONNECT = b"\x05"
    CANCEL = b"\x06"  # client -> dispatcher: drop my queued jobs whose id starts with "prefix"


class Priority(enum.IntEnum):
    """Scheduling classes: a lower value is served first."""

    FINAL = 0
    PARTIAL = 1
    BATCH = 2


@dataclass
class Job:
    """One decode request: everything a stateless worker needs.

    Attributes:
        job_id: unique id chosen by the submitting client; results carry it back.
        priority: :class:`Priority` of the job.
        audio: mono float32 PCM at 16 kHz.
        options: decode options (``language``, ``beam_size``, ``word_timestamps``, ``prompt``).
        key: the utterance a job belongs to. A queued partial is replaced by a newer
            partial with the same key, and dropped when a final with the key arrives:
            only the newest view of an utterance is worth decoding.
        attempt: set by the dispatcher; a result for an older attempt is stale and dropped.
    """

    job_id: str
    priority: Priority
    audio: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    attempt: int = 0
    queued_at: float = 0.0  # set by the dispatcher's scheduler; not sent on the wire

    def header(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "priority": int(self.priority),
            "options": self.options,
            "key": self.key,
            "attempt": self.attempt,
        }


def encode(command: Command, header: dict[str, Any] | None = None, payload: Any = None) -> list[Any]:
    """Build the frames of one message; ``payload`` is a buffer or None."""
    frames: list[Any] = [PROTOCOL, command.value, json.dumps(header or {}, separators=(",", ":")).encode()]
    if payload is not None:
        frames.append(payload)
    return frames


def encode_job(job: Job) -> list[Any]:
    audio = np.ascontiguousarray(job.audio, dtype="<f4")
    return encode(Command.JOB, job.header(), audio.data.cast("B"))


def decode(frames: list[Any]) -> tuple[Command, dict[str, Any], bytes | None]:
    """Split frames into (command, header, payload).

    Raises:
        ProtocolError: wrong tag, unknown command, bad JSON or too many frames.
    """
    raw = [bytes(f) if not isinstance(f, bytes) else f for f in frames]
    if len(raw) < 3 or len(raw) > 4:
        raise ProtocolError("bad_frames", f"expected 3 or 4 frames, got {len(raw)}")
    tag, cmd, header_bytes = raw[0], raw[1], raw[2]
    if tag != PROTOCOL:
        raise ProtocolError("bad_protocol", f"unknown protocol tag {tag[:8]!r}")
    try:
        command = Command(cmd)
    except ValueError:
        raise ProtocolError("bad_command", f"unknown command {cmd[:4]!r}") from None
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("bad_header", f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad_header", "header must be a JSON object")
    return command, header, raw[3] if len(raw) == 4 else None


def decode_job(header: dict[str, Any], payload: bytes | None) -> Job:
    """Rebuild a :class:`Job` from a decoded JOB message.

    Raises:
        ProtocolError: missing fields or PCM that is not whole float32 samples.
    """
    if payload is None or len(payload) % 4:
        raise ProtocolError("bad_payload", "a job needs one frame of float32 PCM")
    try:
        job_id = str(header["job_id"])
        priority = Priority(int(header.get("priority", Priority.BATCH)))
        options = header.get("options") or {}
        if not isinstance(options, dict):
            raise TypeError("options must be an object")
        return Job(
            job_id=job_id,
            priority=priority,
            audio=np.frombuffer(payload, dtype="<f4"),
            options=options,
            key=str(header.get("key", "")),
            attempt=int(header.get("attempt", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("bad_header", f"bad job header: {exc}") from None
