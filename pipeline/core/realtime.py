"""The OpenAI Realtime transcription protocol over our session, without I/O.

``/v1/realtime`` speaks the event protocol of OpenAI's Realtime API in its transcription
mode (docs/protocol.md, "OpenAI Realtime"): JSON events in, JSON events out, audio as
base64 PCM16 at 24 kHz in ``input_audio_buffer.append``. Underneath is the same
:class:`~pipeline.core.session.Session` as ``/v1/stream``: this class only translates.

* Server VAD is the session's segmenter: an utterance's first cut is
  ``input_audio_buffer.speech_started``, its final cut ``speech_stopped`` then
  ``committed``. Each utterance is one conversation item.
* Deltas only ever append, so a delta carries only **stable** text: the words two
  partials in a row agree on (LocalAgreement, as whisper_streaming does). Before a delta
  goes out its text is pinned in the session (:meth:`Session.pin`): the final decode is
  forced to continue from it, so the deltas of an item are always a prefix of its
  ``...transcription.completed`` transcript. Once the final's job is made nothing more is
  pinned, and the rest of the final comes as the item's last delta.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..errors import ProtocolError
from . import realtime_events as events
from .segmenter import VadFn
from .session import Session, State

#: The Realtime API's PCM16 input rate.
INPUT_RATE = events.PCM16.rate


def _error(code: str, message: str, event_id: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message,
                                       "param": param, "event_id": event_id}}


class RealtimeSession:
    """One ``/v1/realtime`` connection. Same surface as :class:`Session` for the ingest."""

    def __init__(self, session_id: str, config: Config, vad_factory: Callable[[], VadFn]) -> None:
        self.id = session_id
        self.inner = Session(session_id, config, vad_factory)
        self.language = "en"
        self.model = "whisper-1"
        self.input_format = events.PCM16
        self._ids = itertools.count(1)
        self._out: list[dict[str, Any]] = []
        self._items: dict[int, str] = {}  # utterance -> item id
        self._last_item: str | None = None
        self._sent: dict[int, str] = {}  # utterance -> text already sent as deltas
        self._failed: dict[int, str] = {}  # utterance -> why its transcription failed
        self._last_partial: dict[int, list[str]] = {}
        self._start_inner()
        self._emit({"type": "session.created", "session": self._session()})

    # -- the ingest's side (Session's interface) -----------------------------------------

    @property
    def state(self) -> State:
        return self.inner.state

    @property
    def audio_samples(self) -> int:
        return self.inner.audio_samples

    @property
    def outstanding(self) -> int:
        return self.inner.outstanding

    def receive_text(self, text: str) -> None:
        try:
            event = events.decode(text)
        except ProtocolError as exc:
            self._emit(_error(exc.code, exc.message, param=exc.param))
            return
        try:
            self._on_event(event)
        except ProtocolError as exc:  # a bad field: nothing changed, the session goes on
            self._emit(_error(exc.code, exc.message, event.event_id, exc.param))
        self._translate()

    def _on_event(self, event: events.Event) -> None:
        kind, event_id = event.type, event.event_id
        if kind in ("session.update", "transcription_session.update"):
            self._on_update(event.fields, kind.replace(".update", ".updated"))
        elif kind == "input_audio_buffer.append":
            self._on_append(event.fields)
        elif kind == "input_audio_buffer.commit":
            utterance = self.inner.commit()
            if utterance is None:
                self._emit(_error("input_audio_buffer_commit_empty", "there is no speech in the buffer to commit",
                                  event_id))
        elif kind == "input_audio_buffer.clear":
            self.inner.clear()
            self._emit({"type": "input_audio_buffer.cleared"})
        else:
            self._emit(_error("unknown_event", f"unsupported event type {kind[:60]!r} on a transcription session",
                              event_id, "type"))

    def receive_bytes(self, data: bytes) -> None:
        self._emit(_error("invalid_event", "send audio as input_audio_buffer.append events, not binary frames"))

    def receive_result(self, header: dict[str, Any]) -> None:
        self.inner.receive_result(header)
        self._translate()

    def messages_to_send(self) -> list[dict[str, Any]]:
        out, self._out = self._out, []
        return out

    def jobs_to_send(self) -> list[Any]:
        return self.inner.jobs_to_send()

    def error_message(self, code: str, message: str) -> dict[str, Any]:
        event = _error(code, message)
        event["event_id"] = f"event_{self.id}_{next(self._ids)}"
        return event

    def finish(self) -> None:
        self.inner.finish()
        self._translate()

    def close(self) -> None:
        self.inner.close()

    # -- events in ---------------------------------------------------------------------

    def _start_inner(self) -> None:
        fmt = self.input_format
        self.inner.receive_text(json.dumps({"action": "start", "sample_rate": fmt.rate, "format": fmt.codec,
                                            "language": self.language, "partials": True}))
        for message in self.inner.messages_to_send():  # "ready": nothing the Realtime protocol says
            if message["type"] == "error":  # settings are checked first, so only a bug gets here: say so
                self._emit(_error(message["code"], message["message"]))

    def _on_update(self, fields: dict[str, Any], reply: str) -> None:
        update = events.parse_update(fields)  # all checked first: a bad field changes nothing
        restart = False
        if update.format is not None and update.format != self.input_format:
            self.input_format, restart = update.format, True
        if update.model is not None:
            self.model = update.model
        if update.language is not None and update.language != self.language:
            self.language, restart = update.language, True
        # Settings apply to the stream from its start: before any audio, start it again.
        if restart and self.inner.state is State.STREAMING and not self.inner.audio_samples:
            self.inner = Session(self.id, self.inner.config, self.inner.vad_factory)
            self._start_inner()
        self._emit({"type": reply, "session": self._session()})

    def _on_append(self, fields: dict[str, Any]) -> None:
        pcm = events.parse_append(fields)
        if self.inner.state is not State.STREAMING:
            self._start_inner()
        self.inner.receive_bytes(pcm)

    # -- events out ----------------------------------------------------------------------

    def _translate(self) -> None:
        for edge, utterance, at_s in self.inner.take_boundaries():
            item = self._item(utterance)
            if edge == "start":
                self._emit({"type": "input_audio_buffer.speech_started", "audio_start_ms": round(at_s * 1000),
                            "item_id": item})
            else:
                self._emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": round(at_s * 1000),
                            "item_id": item})
                self._emit({"type": "input_audio_buffer.committed", "item_id": item,
                            "previous_item_id": self._last_item})
                self._last_item = item
        for message in self.inner.messages_to_send():
            kind = message["type"]
            if kind == "partial":
                self._on_partial(message)
            elif kind == "final":
                self._on_final(message)
            elif kind == "error":
                if message["code"] == "asr_failed" and "utterance_id" in message:
                    self._failed[int(message["utterance_id"])] = message["message"]
                    continue  # reported with the final, as ...transcription.failed
                self._emit(_error(message["code"], message["message"]))

    def _on_partial(self, message: dict[str, Any]) -> None:
        utterance = int(message["utterance_id"])
        words = message["text"].split()
        previous = self._last_partial.get(utterance, [])
        stable = []
        for a, b in zip(previous, words):
            if a != b:
                break
            stable.append(a)
        self._last_partial[utterance] = words
        text = " ".join(stable)
        if self._extends(utterance, text, whole_words=True) and self.inner.pin(utterance, text):
            self._send_delta(utterance, text)

    def _on_final(self, message: dict[str, Any]) -> None:
        utterance = int(message["utterance_id"])
        item = self._item(utterance)
        text = message["text"]
        self._last_partial.pop(utterance, None)
        if utterance in self._failed:
            self._sent.pop(utterance, None)
            self._emit({"type": "conversation.item.input_audio_transcription.failed", "item_id": item,
                        "content_index": 0, "error": {"type": "transcription_error", "code": "asr_failed",
                                                      "message": self._failed.pop(utterance)}})
            return
        if self._extends(utterance, text):
            self._send_delta(utterance, text)
        self._sent.pop(utterance, None)
        self._emit({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                    "content_index": 0, "transcript": text,
                    "usage": {"type": "duration", "seconds": round(message["end"] - message["start"], 3)}})

    def _extends(self, utterance: int, text: str, whole_words: bool = False) -> bool:
        """Whether ``text`` goes on from what was sent for ``utterance`` (deltas only append).

        A partial may only add words; the final may also finish the last one ("can" +
        "not"), since the decoder continued the pinned text.
        """
        sent = self._sent.get(utterance, "")
        if whole_words and sent:
            sent += " "
        return len(text) > len(sent) and text.startswith(sent)

    def _send_delta(self, utterance: int, text: str) -> None:
        """Send what ``text`` adds to the utterance's deltas so far."""
        sent = self._sent.get(utterance, "")
        self._emit({"type": "conversation.item.input_audio_transcription.delta", "item_id": self._item(utterance),
                    "content_index": 0, "delta": text[len(sent):]})
        self._sent[utterance] = text

    def _item(self, utterance: int) -> str:
        if utterance not in self._items:
            self._items[utterance] = f"item_{self.id}_{utterance}"
        return self._items[utterance]

    def _session(self) -> dict[str, Any]:
        return {
            "id": f"sess_{self.id}",
            "object": "realtime.transcription_session",
            "type": "transcription",
            "audio": {"input": {
                "format": {"type": self.input_format.type, "rate": self.input_format.rate},
                "transcription": {"model": self.model, "language": self.language},
                "turn_detection": {"type": "server_vad", "threshold": self.inner.config.segmenter.vad_threshold,
                                   "prefix_padding_ms": self.inner.config.segmenter.speech_pad_ms,
                                   "silence_duration_ms": self.inner.config.segmenter.min_silence_ms},
            }},
        }

    def _emit(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", f"event_{self.id}_{next(self._ids)}")
        self._out.append(event)
