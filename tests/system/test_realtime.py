"""`/v1/realtime` with the official `openai` package as the client, and the real model."""

from __future__ import annotations

import asyncio
import base64

import jiwer
import numpy as np
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from tests.data import JFK, JFK_TEXT, STREAM_HEAD, STREAMS
from tests.helpers import timeout
from tests.system.test_pipeline import RunningPipeline

pytestmark = pytest.mark.system
normalize = EnglishTextNormalizer()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    p = RunningPipeline(tmp_path_factory.mktemp("realtime"))
    yield p
    p.stop()


def pcm24k(path=JFK) -> bytes:
    from faster_whisper.audio import decode_audio

    audio = decode_audio(str(path), sampling_rate=24000)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def transcribe_with_openai(base_url: str, pcm: bytes, update_event: str, commit: bool = False,
                                 pace_s: float = 0.025, items: int = 0) -> list:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="sk-anything")
    events = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        first = await asyncio.wait_for(conn.recv(), timeout(30))
        events.append(first)
        if update_event == "session.update":
            await conn.send({"type": "session.update", "session": {
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                    "transcription": {"model": "whisper-1", "language": "en"},
                                    "turn_detection": {"type": "server_vad"}}}}})
        else:
            await conn.send({"type": "transcription_session.update", "session": {
                "input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1"}}})
        step = 24000 * 2 // 10  # 100 ms of PCM16
        for i in range(0, len(pcm), step):
            await conn.send({"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(pcm[i : i + step]).decode()})
            await asyncio.sleep(pace_s)  # 0.025: 4x real time, under the server's rate limit
        if commit:  # end the utterance now, without waiting for silence
            await conn.send({"type": "input_audio_buffer.commit"})
        spoken = stopped = 0
        settled = False
        while True:
            try:
                # Once every item seen is complete, wait a little for more: a fast final can
                # come before the server has announced the speech after it.
                event = await asyncio.wait_for(conn.recv(), timeout(2) if settled else timeout(60))
            except asyncio.TimeoutError:
                break
            events.append(event)
            spoken += event.type == "input_audio_buffer.speech_started"
            stopped += event.type == "input_audio_buffer.speech_stopped"
            done = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
            settled = bool(spoken and stopped == spoken and len(done) == spoken >= items)
    return events


@pytest.mark.parametrize("update_event", ["session.update", "transcription_session.update"])
def test_the_openai_client_transcribes_jfk(pipeline, update_event):
    base_url = pipeline.url.replace("ws://", "http://").rsplit("/v1/", 1)[0] + "/v1"
    events = asyncio.run(transcribe_with_openai(base_url, pcm24k(), update_event))
    types = [e.type for e in events]
    assert types[0] == "session.created"
    assert update_event.replace(".update", ".updated") in types
    assert "error" not in types, [e for e in events if e.type == "error"]
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    text = " ".join(e.transcript for e in completed)
    assert jiwer.wer(normalize(JFK_TEXT), normalize(text)) <= 0.10, text
    # Every item: speech_started, then speech_stopped and committed, then its transcript.
    for item in {e.item_id for e in completed}:
        mine = [e.type for e in events if getattr(e, "item_id", None) == item]
        assert mine.index("input_audio_buffer.speech_started") < mine.index("input_audio_buffer.speech_stopped") \
            < mine.index("input_audio_buffer.committed") < mine.index(
                "conversation.item.input_audio_transcription.completed")
        # Deltas only append, and never run ahead of the final transcript.
        deltas = "".join(e.delta for e in events if e.type.endswith("transcription.delta") and e.item_id == item)
        final = next(e.transcript for e in completed if e.item_id == item)
        assert final.startswith(deltas), (deltas, final)


def test_deltas_are_a_prefix_of_each_transcript_at_real_time(pipeline):
    """Seven utterances with pauses, streamed at real-time pace (issue 12, bug 3)."""
    import json

    base_url = pipeline.url.replace("ws://", "http://").rsplit("/v1/", 1)[0] + "/v1"
    events = asyncio.run(transcribe_with_openai(base_url, pcm24k(STREAM_HEAD), "session.update", pace_s=0.1,
                                                items=7))
    assert "error" not in [e.type for e in events], [e for e in events if e.type == "error"]
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    reference = json.loads(STREAMS.read_text().splitlines()[0])
    assert len(completed) == len(reference["utterances"])
    early = 0
    for item in completed:
        mine = [e for e in events if getattr(e, "item_id", None) == item.item_id]
        deltas = "".join(e.delta for e in mine if e.type.endswith("transcription.delta"))
        assert item.transcript.startswith(deltas), (deltas, item.transcript)  # what a client appended holds
        assert deltas == item.transcript  # and the last delta completes it
        before = [e for e in mine[: mine.index(item)] if e.type.endswith("transcription.delta")]
        early += bool(before) and before[0].delta != item.transcript  # a delta during speech, not only at the end
    assert early >= len(completed) / 2, early
    text = " ".join(e.transcript for e in completed)
    assert jiwer.wer(normalize(reference["text"]), normalize(text)) <= 0.25, text  # pinned deltas cost a little


def test_commit_ends_an_utterance_mid_speech_and_clear_drops_one(pipeline):
    base_url = pipeline.url.replace("ws://", "http://").rsplit("/v1/", 1)[0] + "/v1"
    pcm = pcm24k()[: int(1.6 * 24000) * 2]  # "And so my fellow..." cut while speaking
    events = asyncio.run(transcribe_with_openai(base_url, pcm, "session.update", commit=True))
    types = [e.type for e in events]
    assert "error" not in types, [e for e in events if e.type == "error"]
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert len(committed) == len(completed) == 1 and committed[0].item_id == completed[0].item_id
    assert completed[0].transcript and jiwer.wer("and so my fellow", normalize(completed[0].transcript)) <= 0.5

    async def clear_then_commit() -> list:
        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=base_url, api_key="sk-anything")
        out = []
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            out.append(await conn.recv())
            await conn.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
            await conn.send({"type": "input_audio_buffer.clear"})
            await conn.send({"type": "input_audio_buffer.commit"})  # nothing left to commit
            while not any(e.type == "error" for e in out):
                out.append(await asyncio.wait_for(conn.recv(), timeout(30)))
        return out

    events = asyncio.run(clear_then_commit())
    types = [e.type for e in events]
    assert "input_audio_buffer.cleared" in types
    assert "conversation.item.input_audio_transcription.completed" not in types
    assert events[-1].error.code == "input_audio_buffer_commit_empty"
