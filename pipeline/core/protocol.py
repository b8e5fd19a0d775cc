"""The client wire protocol of ``/v1/stream``: parsing what clients send, building replies.

docs/protocol.md is the specification; section names below refer to it.
Parsing never raises anything but :class:`~pipeline.errors.ProtocolError`, whose ``code``
goes to the client in an ``error`` message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError

FORMATS = {"pcm_s16le": 2, "pcm_f32le": 4}
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000

# Whisper's language codes; kept here so that the core does not import faster-whisper.
LANGUAGES = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he "
    "hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne "
    "nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk "
    "ur uz vi yi yo yue zh".split()
)


@dataclass(frozen=True)
class Start:
    """``{"action":"start", ...}``: opens a stream (docs/protocol.md, "start")."""

    sample_rate: int = 16000
    format: str = "pcm_s16le"
    language: str = "en"
    words: bool = False
    partials: bool = True


@dataclass(frozen=True)
class Stop:
    """``{"action":"stop"}``: flush every final, then ``stopped``."""


@dataclass(frozen=True)
class Ping:
    """``{"action":"ping"}``: answered by ``pong``."""


ClientMessage = Start | Stop | Ping


def parse(text: str) -> ClientMessage:
    """Parse one text frame from a client.

    Raises:
        ProtocolError: invalid JSON, not an object, unknown action, or bad fields.
    """
    try:
        data = json.loads(text)
    except ValueError:  # JSONDecodeError, and a number of more than 4300 digits
        raise ProtocolError("bad_json", "text frames must be JSON objects (numbers of at most 4300 digits)") from None
    except RecursionError:
        raise ProtocolError("bad_json", "text frames must be JSON objects, not nested this deep") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", "text frames must be JSON objects")
    action = data.get("action")
    if action == "start":
        return _parse_start(data)
    if action == "stop":
        return Stop()
    if action == "ping":
        return Ping()
    if action is None:
        raise ProtocolError("bad_message", 'a message needs an "action": start, stop or ping')
    raise ProtocolError("unknown_action", f"unknown action {describe(action)}; expected start, stop or ping")


def _parse_start(data: dict[str, Any]) -> Start:
    unknown = set(data) - {"action", "sample_rate", "format", "language", "words", "partials"}
    if unknown:
        raise ProtocolError("bad_message", f"unknown start field(s): {', '.join(sorted(map(str, unknown)))[:80]}")
    rate = data.get("sample_rate", 16000)
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ProtocolError(
            "unsupported_sample_rate",
            f"sample_rate must be a whole number of Hz from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}, not {describe(rate)}",
        )
    # Type first: a list or an object is unhashable, and `in` a set or dict would raise.
    fmt = data.get("format", "pcm_s16le")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ProtocolError("unsupported_format", f"format must be one of {', '.join(FORMATS)}, not {describe(fmt)}")
    language = data.get("language", "en")
    if not isinstance(language, str) or language not in LANGUAGES:
        raise ProtocolError("unsupported_language", f"language must be a Whisper language code, not {describe(language)}")
    words, partials = data.get("words", False), data.get("partials", True)
    if not isinstance(words, bool) or not isinstance(partials, bool):
        raise ProtocolError("bad_message", '"words" and "partials" must be true or false')
    return Start(sample_rate=rate, format=fmt, language=language, words=words, partials=partials)


def describe(value: object, limit: int = 40) -> str:
    """A short, safe rendering of a client's value for an error message.

    Never ``str()`` of a container: a deeply nested one would cost time and may raise
    RecursionError, and echoing it back would only amplify the input.
    """
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if value is None or isinstance(value, (bool, float)):
        return json.dumps(value)  # null, true, NaN, Infinity: the client's own spelling
    if isinstance(value, int):
        return str(value) if abs(value) < 10**limit else f"a number of more than {limit} digits"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


# -- server messages (docs/protocol.md, "Server to client") -------------------------


def status(message: str) -> dict[str, Any]:
    return {"type": "status", "message": message}


def level(value: float) -> dict[str, Any]:
    return {"type": "level", "value": round(value, 3)}


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def pong() -> dict[str, Any]:
    return {"type": "pong"}


def transcript(
    kind: str, utterance_id: int, text: str, start_s: float, end_s: float, words: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A ``partial`` or ``final`` message; times are seconds from the start of the stream."""
    msg: dict[str, Any] = {
        "type": kind,
        "utterance_id": utterance_id,
        "text": text,
        "start": round(start_s, 3),
        "end": round(end_s, 3),
    }
    if words is not None:
        msg["words"] = words
    return msg
