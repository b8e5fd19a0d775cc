"""Client events of ``/v1/realtime`` (OpenAI Realtime, transcription mode): parsing, no I/O.

docs/protocol.md ("OpenAI Realtime") is the specification. Every field the server reads
is checked, whole, before anything changes: a bad one raises
:class:`~pipeline.errors.ProtocolError` with OpenAI's error code and the field's dotted
path as ``param``, and :class:`~pipeline.core.realtime.RealtimeSession` answers it with an
``error`` event and goes on. Nothing here raises anything else, whatever the JSON holds.

Both shapes of a session update are read, in either event type: the GA one
(``session.audio.input.format`` / ``.transcription``) and the beta one
(``session.input_audio_format`` / ``.input_audio_transcription``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError
from .protocol import LANGUAGES, describe

#: Longest ``event_id`` and ``model`` echoed back; longer ones are cut or refused.
MAX_ID_CHARS = 128


@dataclass(frozen=True)
class InputFormat:
    """One audio input format of the Realtime API.

    Attributes:
        type: its name in the GA shape (``session.audio.input.format.type``).
        beta: its name in the beta shape (``session.input_audio_format``).
        rate: its sample rate in Hz; the API fixes one per format.
        codec: how the session decodes it (a key of :data:`pipeline.core.protocol.FORMATS`).
    """

    type: str
    beta: str
    rate: int
    codec: str


#: The formats accepted, one row each. A format such as G.711 µ-law (``audio/pcmu``,
#: ``g711_ulaw``, 8000 Hz) needs only its row here once the session's decoder knows it.
INPUT_FORMATS: tuple[InputFormat, ...] = (InputFormat("audio/pcm", "pcm16", 24000, "pcm_s16le"),)
PCM16 = INPUT_FORMATS[0]


@dataclass(frozen=True)
class Event:
    """A client event: its ``type``, its ``event_id`` (to quote in errors) and its fields."""

    type: str
    event_id: str | None
    fields: dict[str, Any]


@dataclass(frozen=True)
class SessionUpdate:
    """What a ``session.update`` or ``transcription_session.update`` changes (None: nothing)."""

    format: InputFormat | None = None
    model: str | None = None
    language: str | None = None


def decode(text: str) -> Event:
    """Parse one text frame into an :class:`Event`.

    Raises:
        ProtocolError: ``invalid_json`` (not JSON, too deep, a number past 4300 digits) or
            ``invalid_event`` (not an object, or no string ``type``).
    """
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError and huge numbers
        raise ProtocolError("invalid_json", "events must be JSON objects") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError("invalid_event", 'an event needs a "type"', "type")
    event_id = data.get("event_id")
    return Event(data["type"], event_id[:MAX_ID_CHARS] if isinstance(event_id, str) else None, data)


def parse_update(fields: dict[str, Any]) -> SessionUpdate:
    """Validate a session update, both shapes, and return what it changes.

    Fields this server does not act on (``turn_detection``, ``noise_reduction``,
    ``include``, ...) are accepted when their type is right, and ignored.

    Raises:
        ProtocolError: ``invalid_type``, ``invalid_value`` or ``unsupported_format``, with
            the field's path as ``param``.
    """
    session = _object(fields.get("session"), "session") or {}
    _typed(session.get("type"), str, "session.type", "a string")
    _typed(session.get("include"), list, "session.include", "an array")
    audio = _object(session.get("audio"), "session.audio") or {}
    audio_in = _object(audio.get("input"), "session.audio.input") or {}
    for key in ("turn_detection", "noise_reduction"):
        _object(audio_in.get(key), f"session.audio.input.{key}")
    for key in ("turn_detection", "input_audio_noise_reduction"):
        _object(session.get(key), f"session.{key}")
    ga_format = _format(audio_in.get("format"), "session.audio.input.format")
    beta_format = _format(session.get("input_audio_format"), "session.input_audio_format")
    ga = _transcription(audio_in.get("transcription"), "session.audio.input.transcription")
    beta = _transcription(session.get("input_audio_transcription"), "session.input_audio_transcription")
    return SessionUpdate(format=ga_format or beta_format, model=ga.model or beta.model,
                         language=ga.language or beta.language)


def parse_append(fields: dict[str, Any]) -> bytes:
    """The PCM of an ``input_audio_buffer.append``.

    Raises:
        ProtocolError: ``audio`` is not a string (``invalid_type``) or not base64 (``invalid_value``).
    """
    audio = fields.get("audio", "")
    if not isinstance(audio, str):
        raise ProtocolError("invalid_type", f"Invalid type for 'audio': expected a base64 string, but got "
                                            f"{describe(audio)} instead.", "audio")
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_value", "audio must be base64 PCM16", "audio") from None


# -- fields -----------------------------------------------------------------------------


def _typed(value: Any, kind: type | tuple[type, ...], param: str, expected: str) -> Any:
    """``value`` if it is None or of ``kind`` (bool never passes for a number)."""
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise ProtocolError("invalid_type", f"Invalid type for '{param}': expected {expected}, but got "
                                        f"{describe(value)} instead.", param)


def _object(value: Any, param: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None = _typed(value, dict, param, "an object")
    return result


def _format(value: Any, param: str) -> InputFormat | None:
    """A format by its beta name (a string) or as a GA object ``{type, rate}``."""
    if value is None:
        return None
    names = ", ".join(repr(f.beta) for f in INPUT_FORMATS)
    if isinstance(value, str):
        for fmt in INPUT_FORMATS:
            if value in (fmt.beta, fmt.type):
                return fmt
        raise ProtocolError("unsupported_format", f"Unsupported input format {describe(value)}: supported "
                                                  f"are {names}.", param)
    value = _object(value, param)
    assert value is not None
    kind = _typed(value.get("type", PCM16.type), str, f"{param}.type", "a string")
    matches = [f for f in INPUT_FORMATS if f.type == kind]
    if not matches:
        types = ", ".join(repr(f.type) for f in INPUT_FORMATS)
        raise ProtocolError("unsupported_format", f"Unsupported input format {describe(kind)}: supported are "
                                                  f"{types}.", f"{param}.type")
    fmt = matches[0]
    rate = value.get("rate")
    if rate is None:
        return fmt
    _typed(rate, (int, float), f"{param}.rate", "a number")
    if isinstance(rate, float) and not math.isfinite(rate):
        raise ProtocolError("invalid_value", f"Invalid value for '{param}.rate': {describe(rate)} is not a "
                                             "finite number.", f"{param}.rate")
    if rate != fmt.rate:
        raise ProtocolError("unsupported_format", f"{fmt.type} is supported at {fmt.rate} Hz only, not "
                                                  f"{describe(rate)}.", f"{param}.rate")
    return fmt


@dataclass(frozen=True)
class _Transcription:
    model: str | None = None
    language: str | None = None


def _transcription(value: Any, param: str) -> _Transcription:
    settings = _object(value, param)
    if not settings:
        return _Transcription()
    model = _typed(settings.get("model"), str, f"{param}.model", "a string")
    if model is not None and len(model) > MAX_ID_CHARS:
        raise ProtocolError("invalid_value", f"Invalid value for '{param}.model': longer than {MAX_ID_CHARS} "
                                             "characters.", f"{param}.model")
    _typed(settings.get("prompt"), str, f"{param}.prompt", "a string")
    language = _typed(settings.get("language"), str, f"{param}.language", "a string")
    if language and language not in LANGUAGES:
        raise ProtocolError("invalid_value", f"Invalid value for '{param}.language': {describe(language)} is not "
                                             "a supported language code (ISO-639-1, such as 'en').",
                            f"{param}.language")
    return _Transcription(model or None, language or None)
