"""The OpenAI Realtime translation over the session, with no sockets (EnergyVad, scripted answers)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Config
from pipeline.core import realtime_events
from pipeline.core.realtime import RealtimeSession
from pipeline.core.wire import Priority
from tests.fuzz import dumps, shaped, values
from tests.helpers import EnergyVad, speech_like


def make() -> RealtimeSession:
    return RealtimeSession("r1", Config(), EnergyVad)


def append(rt: RealtimeSession, audio16k: np.ndarray) -> None:
    audio = np.repeat(audio16k, 3)[::2]  # 16 kHz -> 24 kHz, crudely: the tone survives
    pcm = (audio * 32767).astype("<i2").tobytes()
    for i in range(0, len(pcm), 4800):
        rt.receive_text(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + 4800]).decode()}))


def out_types(rt: RealtimeSession) -> list[str]:
    return [e["type"] for e in rt.messages_to_send()]


def test_session_created_comes_first_and_updates_are_answered_in_both_shapes():
    rt = make()
    created = rt.messages_to_send()
    assert [e["type"] for e in created] == ["session.created"]
    assert created[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    rt.receive_text(json.dumps({"type": "session.update", "session": {"audio": {"input": {
        "transcription": {"model": "whisper-1", "language": "en"}}}}}))
    rt.receive_text(json.dumps({"type": "transcription_session.update",
                                "session": {"input_audio_format": "pcm16"}}))
    assert out_types(rt) == ["session.updated", "transcription_session.updated"]


def test_bad_events_get_error_events_and_the_session_goes_on():
    rt = make()
    rt.messages_to_send()
    for bad in ("not json", "[1]", json.dumps({"type": "response.create"}),
                json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}),
                json.dumps({"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}})):
        rt.receive_text(bad)
    rt.receive_bytes(b"\x00\x01")
    errors = rt.messages_to_send()
    assert [e["type"] for e in errors] == ["error"] * 6
    assert [e["error"]["code"] for e in errors] == ["invalid_json", "invalid_event", "unknown_event", "invalid_value",
                                                   "unsupported_format", "invalid_event"]
    assert all(e["error"]["message"] and e["event_id"] for e in errors)


def test_an_utterance_is_speech_started_stopped_committed_then_completed():
    rt = make()
    rt.messages_to_send()
    append(rt, speech_like([("silence", 0.5), ("speech", 2.0), ("silence", 1.0)]))
    events = rt.messages_to_send()
    assert [e["type"] for e in events] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                                           "input_audio_buffer.committed"]
    item = events[0]["item_id"]
    assert all(e["item_id"] == item for e in events) and events[2]["previous_item_id"] is None
    assert 300 <= events[0]["audio_start_ms"] <= 500 and 2400 <= events[1]["audio_end_ms"] <= 2800
    (final,) = [j for j in rt.jobs_to_send() if j.priority == Priority.FINAL]
    rt.receive_result({"job_id": final.job_id, "text": "Hello there."})
    (done,) = [e for e in rt.messages_to_send() if e["type"].endswith("completed")]
    assert done["item_id"] == item and done["transcript"] == "Hello there."


def test_deltas_carry_only_words_two_partials_agree_on_and_are_pinned_for_the_final():
    rt = make()
    rt.messages_to_send()
    append(rt, speech_like([("silence", 0.3), ("speech", 4.0)]))  # still speaking: partials
    rt.messages_to_send()
    partials = [j for j in rt.jobs_to_send() if j.priority == Priority.PARTIAL]
    assert partials
    uid = partials[0].job_id.rsplit(":", 2)[1]

    def partial(seq: int, text: str) -> list[str]:
        rt.inner._partial_in_flight.discard(int(uid))  # scripted answers, one at a time
        rt.receive_result({"job_id": f"r1:{uid}:p{100 + seq}", "text": text})
        return [e["delta"] for e in rt.messages_to_send() if e["type"].endswith("delta")]

    deltas = []
    for seq, text in enumerate(["the quick", "the quick brown", "the quack brown fox", "the quack brown fox jumps"], 1):
        deltas += partial(seq, text)
    # "the quick" agreed twice and went out; "quick" then changed, so nothing more is
    # stable until the final, which continues what was sent; nothing sent is taken back.
    assert deltas == ["the quick"]
    rt.receive_text(json.dumps({"type": "input_audio_buffer.commit"}))
    rt.messages_to_send()
    (final,) = [j for j in rt.jobs_to_send() if j.priority == Priority.FINAL]
    assert final.options["committed"] == "the quick"  # the final decode continues the deltas
    assert partial(9, "the quick brown fox jumps over") == []  # pins are closed once the final's job is made
    rt.receive_result({"job_id": final.job_id, "text": "the quick brown fox jumps."})
    events = rt.messages_to_send()
    assert [e["delta"] for e in events if e["type"].endswith("delta")] == [" brown fox jumps."]
    assert [e["transcript"] for e in events if e["type"].endswith("completed")] == ["the quick brown fox jumps."]


def test_stream_sessions_pin_nothing():
    from pipeline.core.session import Session

    s = Session("s1", Config(), EnergyVad)
    s.receive_text('{"action": "start"}')
    s.receive_bytes((speech_like([("silence", 0.3), ("speech", 1.5), ("silence", 1.0)]) * 32767).astype("<i2").tobytes())
    (final,) = [j for j in s.jobs_to_send() if j.priority == Priority.FINAL]
    assert "committed" not in final.options and final.options["fallback"] is True


def test_a_failed_final_is_transcription_failed():
    rt = make()
    rt.messages_to_send()
    append(rt, speech_like([("silence", 0.3), ("speech", 1.5), ("silence", 1.0)]))
    rt.messages_to_send()
    (final,) = [j for j in rt.jobs_to_send() if j.priority == Priority.FINAL]
    rt.receive_result({"job_id": final.job_id, "text": "", "error": "worker lost"})
    events = rt.messages_to_send()
    assert [e["type"] for e in events] == ["conversation.item.input_audio_transcription.failed"]
    assert "worker lost" in events[0]["error"]["message"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40), st.binary(max_size=200),
                          st.sampled_from(['{"type":"input_audio_buffer.commit"}', '{"type":"input_audio_buffer.clear"}',
                                           '{"type":"session.update","session":{}}',
                                           '{"type":"input_audio_buffer.append","audio":"AAAA"}'])), max_size=20))
def test_random_events_never_raise(events):
    rt = make()
    for e in events:
        rt.receive_bytes(e) if isinstance(e, bytes) else rt.receive_text(e)
    assert all(m["type"] for m in rt.messages_to_send())


# -- hostile fields (issue 13, defects 1 and 4) ------------------------------------------


def update(session: object, kind: str = "session.update") -> str:
    return json.dumps({"type": kind, "event_id": "evt_1", "session": session})


@pytest.mark.parametrize("text, code, param", [
    (update({"audio": {"input": []}}), "invalid_type", "session.audio.input"),
    (update({"audio": []}), "invalid_type", "session.audio"),
    (update([]), "invalid_type", "session"),
    (update({"audio": {"input": {"format": {"type": "audio/pcm", "rate": "abc"}}}}), "invalid_type",
     "session.audio.input.format.rate"),
    (update({"audio": {"input": {"format": {"type": "audio/pcm", "rate": []}}}}), "invalid_type",
     "session.audio.input.format.rate"),
    (update({"audio": {"input": {"format": {"type": "audio/pcm", "rate": float("nan")}}}}), "invalid_value",
     "session.audio.input.format.rate"),
    ('{"type":"session.update","event_id":"evt_1","session":{"audio":{"input":{"format":{"rate":1e999}}}}}',
     "invalid_value", "session.audio.input.format.rate"),
    (update({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}), "unsupported_format",
     "session.audio.input.format.rate"),
    (update({"audio": {"input": {"format": {"type": ["audio/pcm"]}}}}), "invalid_type",
     "session.audio.input.format.type"),
    (update({"audio": {"input": {"format": {"type": "audio/opus"}}}}), "unsupported_format",
     "session.audio.input.format.type"),
    (update({"audio": {"input": {"format": 24000}}}), "invalid_type", "session.audio.input.format"),
    (update({"input_audio_format": {"type": "audio/pcmu"}}, "transcription_session.update"), "unsupported_format",
     "session.input_audio_format.type"),
    (update({"input_audio_format": "g711_ulaw"}), "unsupported_format", "session.input_audio_format"),
    (update({"input_audio_format": ["pcm16"]}), "invalid_type", "session.input_audio_format"),
    (update({"input_audio_transcription": {"language": "xx"}}, "transcription_session.update"), "invalid_value",
     "session.input_audio_transcription.language"),
    (update({"audio": {"input": {"transcription": {"language": "xx"}}}}), "invalid_value",
     "session.audio.input.transcription.language"),
    (update({"input_audio_transcription": {"language": ["en"]}}), "invalid_type",
     "session.input_audio_transcription.language"),
    (update({"input_audio_transcription": {"model": {"name": "x"}}}), "invalid_type",
     "session.input_audio_transcription.model"),
    (update({"input_audio_transcription": {"model": "m" * 1000}}), "invalid_value",
     "session.input_audio_transcription.model"),
    (update({"input_audio_transcription": "whisper-1"}), "invalid_type", "session.input_audio_transcription"),
    (update({"turn_detection": "server_vad"}), "invalid_type", "session.turn_detection"),
    ('{"type":' + "9" * 5000 + "}", "invalid_json", None),
    ('{"type":"session.update","session":{"audio":' + "1" * 5000 + "}}", "invalid_json", None),
    ("[" * 100000, "invalid_json", None),
    ('{"type":["session.update"]}', "invalid_event", "type"),
    ('{"type":"input_audio_buffer.append","event_id":"evt_1","audio":["AAAA"]}', "invalid_type", "audio"),
])
def test_bad_fields_get_an_openai_error_event_and_change_nothing(text, code, param):
    rt = make()
    rt.messages_to_send()
    rt.receive_text(text)
    (event,) = rt.messages_to_send()
    assert event["type"] == "error" and event["event_id"]
    error = event["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code and error["param"] == param, error
    assert error["message"] and len(error["message"]) < 300
    assert error["event_id"] == ("evt_1" if '"evt_1"' in text else None)
    # Nothing changed, and the session still takes settings and audio.
    assert (rt.language, rt.model, rt.input_format) == ("en", "whisper-1", realtime_events.PCM16)
    rt.receive_text(update({"audio": {"input": {"transcription": {"language": "de"}}}}))
    (updated,) = rt.messages_to_send()
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["transcription"]["language"] == "de"


def test_a_bad_language_is_refused_at_the_update_and_audio_still_transcribes():
    rt = make()
    rt.messages_to_send()
    rt.receive_text(json.dumps({"type": "transcription_session.update",
                                "session": {"input_audio_transcription": {"language": "xx"}}}))
    assert [e["error"]["code"] for e in rt.messages_to_send()] == ["invalid_value"]
    append(rt, speech_like([("silence", 0.5), ("speech", 1.5), ("silence", 1.0)]))
    events = rt.messages_to_send()
    assert not [e for e in events if e["type"] == "error"], events
    (final,) = [j for j in rt.jobs_to_send() if j.priority == Priority.FINAL]
    assert final.options["language"] == "en"


def test_a_language_before_audio_restarts_the_stream_with_it():
    rt = make()
    rt.messages_to_send()
    rt.receive_text(update({"input_audio_transcription": {"language": "de", "model": "gpt-4o-transcribe"}},
                           "transcription_session.update"))
    (updated,) = rt.messages_to_send()
    assert updated["type"] == "transcription_session.updated"
    assert updated["session"]["audio"]["input"]["transcription"] == {"model": "gpt-4o-transcribe", "language": "de"}
    append(rt, speech_like([("silence", 0.5), ("speech", 1.5), ("silence", 1.0)]))
    (final,) = [j for j in rt.jobs_to_send() if j.priority == Priority.FINAL]
    assert final.options["language"] == "de"


SESSION_TREE = {
    "type": None, "include": None, "turn_detection": None, "input_audio_noise_reduction": None,
    "input_audio_format": {"type": None, "rate": None},
    "input_audio_transcription": {"model": None, "language": None, "prompt": None},
    "audio": {"input": {"format": {"type": None, "rate": None}, "turn_detection": None, "noise_reduction": None,
                        "transcription": {"model": None, "language": None, "prompt": None}}},
}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["session.update", "transcription_session.update", "input_audio_buffer.append",
                        "input_audio_buffer.commit", "input_audio_buffer.clear", "response.create"]),
       st.one_of(shaped(SESSION_TREE), values()), st.one_of(st.none(), values()), st.one_of(st.none(), values()))
def test_nested_and_huge_values_in_any_field_never_raise(kind, session, audio, event_id):
    rt = make()
    event = {"type": kind, "session": session}
    if audio is not None:
        event["audio"] = audio
    if event_id is not None:
        event["event_id"] = event_id
    rt.receive_text(dumps(event))
    out = rt.messages_to_send()
    assert all(m["type"] for m in out)
    for m in out:
        if m["type"] == "error":
            assert m["error"]["code"] and len(m["error"]["message"]) < 300
            assert m["error"]["event_id"] is None or isinstance(m["error"]["event_id"], str)
    json.dumps(out)  # everything sent is plain JSON


@settings(max_examples=100, deadline=None)
@given(values())
def test_any_json_value_as_an_event_never_raises(value):
    rt = make()
    rt.receive_text(dumps(value))
    assert all(m["type"] for m in rt.messages_to_send())
