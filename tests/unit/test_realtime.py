"""The OpenAI Realtime translation over the session, with no sockets (EnergyVad, scripted answers)."""

from __future__ import annotations

import base64
import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Config
from pipeline.core.realtime import RealtimeSession
from pipeline.core.wire import Priority
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
    # Agreed words, less the earlier partial's last word (heard cut short); "quick" became
    # "quack" before it was stable, so it never went out, and nothing sent is taken back.
    assert deltas == ["the", " quack brown"]
    rt.receive_text(json.dumps({"type": "input_audio_buffer.commit"}))
    rt.messages_to_send()
    (final,) = [j for j in rt.jobs_to_send() if j.priority == Priority.FINAL]
    assert final.options["committed"] == "the quack brown"  # the final decode continues the deltas
    assert partial(9, "the quack brown fox jumps over") == []  # pins are closed once the final's job is made
    rt.receive_result({"job_id": final.job_id, "text": "the quack brown fox jumps."})
    events = rt.messages_to_send()
    assert [e["delta"] for e in events if e["type"].endswith("delta")] == [" fox jumps."]
    assert [e["transcript"] for e in events if e["type"].endswith("completed")] == ["the quack brown fox jumps."]


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
