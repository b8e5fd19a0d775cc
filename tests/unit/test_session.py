"""The session state machine: protocol in, jobs and messages out, with no sockets."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Config, SegmenterConfig, WorkersConfig
from pipeline.core.session import Session, State
from pipeline.core.wire import Priority
from tests.helpers import EnergyVad, pcm16, speech_like

START = json.dumps({"action": "start", "sample_rate": 16000, "format": "pcm_s16le"})
STOP = json.dumps({"action": "stop"})


def make(workers: WorkersConfig | None = None, **seg) -> Session:
    return Session("s1", Config(segmenter=SegmenterConfig(**seg), workers=workers or WorkersConfig()), EnergyVad)


def feed_audio(session: Session, audio: np.ndarray, frame: int = 1600) -> None:
    for i in range(0, len(audio), frame):
        session.receive_bytes(pcm16(audio[i : i + frame]))


def answer(session: Session, jobs, text="hello") -> None:
    for job in jobs:
        session.receive_result({"job_id": job.job_id, "text": f"{text} {job.job_id}",
                                "duration_s": len(job.audio) / 16000})


def types(messages):
    return [m["type"] for m in messages]


def test_start_stop_without_audio():
    s = make()
    s.receive_text(START)
    s.receive_text(STOP)
    assert s.messages_to_send() == [{"type": "status", "message": "ready"}, {"type": "status", "message": "stopped"}]
    assert s.state is State.IDLE


def test_ping():
    s = make()
    s.receive_text('{"action":"ping"}')
    assert s.messages_to_send() == [{"type": "pong"}]


def test_audio_before_start_is_an_error_and_session_survives():
    s = make()
    s.receive_bytes(b"\x00\x00")
    (m,) = s.messages_to_send()
    assert m["type"] == "error" and m["code"] == "not_started"
    s.receive_text(START)
    assert types(s.messages_to_send()) == ["status"]


def test_odd_length_pcm_is_an_error_and_stream_goes_on():
    s = make()
    s.receive_text(START)
    s.messages_to_send()
    s.receive_bytes(b"\x00\x00\x00")
    (m,) = s.messages_to_send()
    assert m["code"] == "bad_audio"
    feed_audio(s, speech_like([("speech", 1.0), ("silence", 1.0)]))
    assert any(j.priority == Priority.FINAL for j in s.jobs_to_send())


def test_bad_json_unknown_action_double_start():
    s = make()
    s.receive_text("{")
    s.receive_text('{"action":"fly"}')
    s.receive_text(START)
    s.receive_text(START)
    s.receive_text('{"action":"start","sample_rate":1}')
    codes = [m.get("code") for m in s.messages_to_send() if m["type"] == "error"]
    assert codes == ["bad_json", "unknown_action", "already_started", "unsupported_sample_rate"]
    assert s.state is State.STREAMING


def test_one_final_per_utterance_in_order_even_if_answers_come_reversed():
    s = make(WorkersConfig(context_utterances=0))  # without context, finals are not chained
    s.receive_text(START)
    feed_audio(s, speech_like([("speech", 1.0), ("silence", 1.0), ("speech", 1.0), ("silence", 1.0)]))
    finals = [j for j in s.jobs_to_send() if j.priority == Priority.FINAL]
    assert len(finals) == 2
    s.messages_to_send()
    answer(s, reversed(finals))
    answer(s, finals)  # duplicates are ignored
    out = [m for m in s.messages_to_send() if m["type"] == "final"]
    assert [m["utterance_id"] for m in out] == [0, 1]
    assert out[0]["start"] < out[0]["end"] <= out[1]["start"] < out[1]["end"]


def test_partials_never_after_final_and_never_backwards():
    s = make(first_partial_s=0.3, partial_interval_s=0.3)
    s.receive_text(START)
    feed_audio(s, speech_like([("speech", 1.0)]))
    (p1,) = s.jobs_to_send()
    answer(s, [p1])
    feed_audio(s, speech_like([("speech", 0.5)]))
    (p2,) = s.jobs_to_send()
    answer(s, [p2])
    answer(s, [p1])  # a late copy of an older partial: dropped
    feed_audio(s, speech_like([("speech", 0.5)]))
    (p3,) = s.jobs_to_send()
    s.receive_text(STOP)
    (final,) = s.jobs_to_send()
    answer(s, [final])
    answer(s, [p3])  # after the final: dropped
    out = s.messages_to_send()
    kinds = [m["type"] for m in out if m["type"] in ("partial", "final", "status")]
    assert kinds == ["status", "partial", "partial", "final", "status"]
    partials = [m for m in out if m["type"] == "partial"]
    assert partials[0]["end"] < partials[1]["end"]
    assert out[-1] == {"type": "status", "message": "stopped"}


def test_one_partial_in_flight_per_utterance():
    s = make(first_partial_s=0.3, partial_interval_s=0.3)
    s.receive_text(START)
    feed_audio(s, speech_like([("speech", 3.0)]))
    jobs = s.jobs_to_send()
    assert len(jobs) == 1 and s.partials_skipped >= 5  # the workers are slow: no pile-up
    answer(s, jobs)
    feed_audio(s, speech_like([("speech", 0.4)]))
    assert len(s.jobs_to_send()) == 1  # answered: the cadence resumes


def test_stop_waits_for_outstanding_finals():
    s = make()
    s.receive_text(START)
    feed_audio(s, speech_like([("speech", 1.0)]))
    s.receive_text(STOP)
    jobs = [j for j in s.jobs_to_send() if j.priority == Priority.FINAL]
    assert len(jobs) == 1 and s.state is State.STOPPING
    assert "stopped" not in [m.get("message") for m in s.messages_to_send()]
    assert s.outstanding == 1
    answer(s, jobs)
    out = s.messages_to_send()
    assert types(out) == ["final", "status"] and out[-1]["message"] == "stopped"


def test_failed_final_still_gives_a_final_and_an_error():
    s = make()
    s.receive_text(START)
    feed_audio(s, speech_like([("speech", 1.0), ("silence", 1.0)]))
    (job,) = [j for j in s.jobs_to_send() if j.priority == Priority.FINAL]
    s.messages_to_send()
    s.receive_result({"job_id": job.job_id, "text": "", "error": "worker lost"})
    out = s.messages_to_send()
    assert types(out) == ["error", "final"] and out[0]["code"] == "asr_failed"


def test_words_are_offset_to_stream_time():
    s = make()
    s.receive_text(json.dumps({"action": "start", "words": True}))
    feed_audio(s, speech_like([("silence", 2.0), ("speech", 1.0), ("silence", 1.0)]))
    (job,) = [j for j in s.jobs_to_send() if j.priority == Priority.FINAL]
    assert job.options["word_timestamps"] is True
    s.receive_result({"job_id": job.job_id, "text": "hi", "words": [{"word": "hi", "start": 0.2, "end": 0.5}]})
    (final,) = [m for m in s.messages_to_send() if m["type"] == "final"]
    assert final["words"][0]["start"] == round(final["start"] + 0.2, 3)


def test_resampled_stream_has_stream_times():
    s = make()
    s.receive_text(json.dumps({"action": "start", "sample_rate": 48000}))
    audio16 = speech_like([("silence", 1.0), ("speech", 1.0), ("silence", 1.0)])
    audio48 = np.repeat(audio16, 3)
    for i in range(0, len(audio48), 4800):
        s.receive_bytes(pcm16(audio48[i : i + 4800]))
    (job,) = [j for j in s.jobs_to_send() if j.priority == Priority.FINAL]
    answer(s, [job])
    (final,) = [m for m in s.messages_to_send() if m["type"] == "final"]
    assert abs(final["start"] - 0.85) < 0.1 and abs(final["end"] - 2.15) < 0.1


def test_level_messages_follow_audio():
    s = make()
    s.receive_text(START)
    feed_audio(s, speech_like([("speech", 1.0)]), frame=1600)
    levels = [m for m in s.messages_to_send() if m["type"] == "level"]
    assert 8 <= len(levels) <= 11 and all(0.5 < m["value"] <= 1 for m in levels)


def test_restart_after_stop_keeps_ids_unique():
    s = make()
    ids = []
    for _ in range(2):
        s.receive_text(START)
        feed_audio(s, speech_like([("speech", 1.0), ("silence", 1.0)]))
        s.receive_text(STOP)
        jobs = s.jobs_to_send()
        answer(s, jobs)
        ids += [m["utterance_id"] for m in s.messages_to_send() if m["type"] == "final"]
    assert ids == [0, 1]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from([START, STOP, '{"action":"ping"}', "{", '{"action":"start","format":"pcm_f32le"}']),
    st.text(max_size=30),
    st.binary(max_size=700),
), max_size=25))
def test_random_message_order_never_raises(messages):
    s = make()
    for m in messages:
        if isinstance(m, bytes):
            s.receive_bytes(m)
        else:
            s.receive_text(m)
        answer(s, s.jobs_to_send())
    for m in s.messages_to_send():
        assert m["type"] in {"status", "level", "partial", "final", "error", "pong"}


def finals_of(jobs):
    return [j for j in jobs if j.priority == Priority.FINAL]


def test_jobs_carry_earlier_utterances_as_context():
    s = make()
    s.receive_text(START)
    piece = speech_like([("silence", 0.5), ("speech", 1.0), ("silence", 1.0)])
    piece[8000:24000] += np.linspace(0, 0.05, 16000, dtype=np.float32)  # not periodic: slices are checkable
    feed_audio(s, piece)
    (first,) = finals_of(s.jobs_to_send())
    assert first.options["prefix"] == "" and first.options["context_s"] == 0.0
    s.receive_result({"job_id": first.job_id, "text": "The fish twisted."})
    feed_audio(s, piece)
    jobs = s.jobs_to_send()
    (second,) = finals_of(jobs)
    assert all(j.options["prefix"] == "The fish twisted." for j in jobs)
    # the audio runs from the first utterance's start; context_s marks where the new one starts
    offset = int(round(second.options["context_s"] * 16000))
    assert len(second.audio) == offset + (len(first.audio))
    np.testing.assert_allclose(second.audio[:len(first.audio)], first.audio, atol=1e-4)
    s.receive_result({"job_id": second.job_id, "text": "It turned."})
    feed_audio(s, piece)
    (third,) = finals_of(s.jobs_to_send())
    assert third.options["prefix"] == "The fish twisted. It turned."


def test_a_final_waits_for_the_text_of_the_one_before():
    s = make()
    s.receive_text(START)
    piece = speech_like([("silence", 0.5), ("speech", 1.0), ("silence", 1.0)])
    feed_audio(s, piece)
    (first,) = finals_of(s.jobs_to_send())
    feed_audio(s, piece)  # the first final has not come back yet
    feed_audio(s, piece)
    assert finals_of(s.jobs_to_send()) == []
    s.receive_result({"job_id": first.job_id, "text": ""})  # empty: no use as context
    (second,) = finals_of(s.jobs_to_send())
    assert second.options["prefix"] == "" and second.options["context_s"] == 0.0
    s.receive_result({"job_id": second.job_id, "text": "Hello."})
    (third,) = finals_of(s.jobs_to_send())  # released, with the audio it had when it was cut
    assert third.options["prefix"] == "Hello."
    s.receive_result({"job_id": third.job_id, "text": "Again."})
    assert [m["text"] for m in s.messages_to_send() if m["type"] == "final"] == ["", "Hello.", "Again."]


def test_stop_flushes_held_finals():
    s = make()
    s.receive_text(START)
    feed_audio(s, speech_like([("speech", 1.0), ("silence", 1.0), ("speech", 1.0)]))
    s.receive_text(STOP)
    (first,) = finals_of(s.jobs_to_send())
    s.receive_result({"job_id": first.job_id, "text": "One."})
    (second,) = finals_of(s.jobs_to_send())
    s.receive_result({"job_id": second.job_id, "text": "Two."})
    assert s.messages_to_send()[-1] == {"type": "status", "message": "stopped"}


def test_context_is_off_when_configured():
    s = Session("s1", Config(workers=WorkersConfig(context_utterances=0)), EnergyVad)
    s.receive_text(START)
    piece = speech_like([("speech", 1.0), ("silence", 1.0)])
    feed_audio(s, piece)
    (first,) = finals_of(s.jobs_to_send())
    s.receive_result({"job_id": first.job_id, "text": "Hi."})
    feed_audio(s, piece)
    (second,) = finals_of(s.jobs_to_send())
    assert second.options["prefix"] == ""
