"""The real server (sockets, dispatcher, spawned workers, Silero VAD) with the scripted fake ASR."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from pipeline.client import load_audio, stream
from tests.conftest import fake_config
from tests.data import JFK, STREAM_HEAD
from tests.helpers import pcm16, timeout


def run_stream(url, audio, speed=20.0, **kw):
    return asyncio.run(stream(url, audio, speed=speed, timeout_s=timeout(60), **kw))


def check_invariants(result):
    """docs/protocol.md's guarantees, checked on one stream's messages."""
    msgs = [m for _, m in result.messages]
    assert msgs[0] == {"type": "status", "message": "ready"}
    assert msgs[-1] == {"type": "status", "message": "stopped"}
    finals = [m for m in msgs if m["type"] == "final"]
    ids = [m["utterance_id"] for m in finals]
    assert ids == list(range(len(ids))), "one final per utterance, in order"
    seen_final = set()
    for m in msgs:
        if m["type"] == "final":
            seen_final.add(m["utterance_id"])
        if m["type"] == "partial":
            assert m["utterance_id"] not in seen_final, "partial after its final"
    for a, b in zip(finals, finals[1:]):
        assert a["start"] < a["end"] <= b["start"] < b["end"]
    return finals


def fake_duration(final) -> float:
    return float(re.match(r"speech of ([\d.]+) seconds", final["text"]).group(1))


def test_jfk_gives_finals_that_match_their_audio(fake_pipeline):
    result = run_stream(fake_pipeline.url, load_audio(str(JFK)))
    finals = check_invariants(result)
    assert 2 <= len(finals) <= 6
    for f in finals:  # the fake answers with the length of the audio it was given
        assert fake_duration(f) == pytest.approx(f["end"] - f["start"], abs=0.01)
    assert finals[-1]["end"] <= 11.1
    assert result.of_type("partial"), "partials while speaking"
    assert result.of_type("level")
    assert not result.of_type("error")


def test_resampled_44k_stream_gives_the_same_utterances(fake_pipeline):
    audio = load_audio(str(JFK))
    base = check_invariants(run_stream(fake_pipeline.url, audio))
    # Send the same speech at 44.1 kHz: the server resamples.
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=44100)
    frame = av.AudioFrame.from_ndarray((audio * 32767).astype("<i2")[None, :], format="s16", layout="mono")
    frame.sample_rate = 16000
    pcm44 = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in resampler.resample(frame) + resampler.resample(None))
    with connect(fake_pipeline.url) as ws:
        ws.send(json.dumps({"action": "start", "sample_rate": 44100}))
        for i in range(0, len(pcm44), 8820):
            ws.send(pcm44[i : i + 8820])
        ws.send(json.dumps({"action": "stop"}))
        msgs = []
        while (m := json.loads(ws.recv(timeout=timeout(30)))) != {"type": "status", "message": "stopped"}:
            msgs.append(m)
    finals = [m for m in msgs if m["type"] == "final"]
    assert len(finals) == len(base)
    for a, b in zip(finals, base):
        assert a["start"] == pytest.approx(b["start"], abs=0.1) and a["end"] == pytest.approx(b["end"], abs=0.1)


def test_bad_input_gets_errors_and_the_connection_stays_up(fake_pipeline):
    with connect(fake_pipeline.url) as ws:
        def reply():
            while (m := json.loads(ws.recv(timeout=timeout(10))))["type"] == "level":
                pass
            return m

        ws.send(b"\x00\x01")
        assert reply()["code"] == "not_started"
        ws.send("{not json")
        assert reply()["code"] == "bad_json"
        ws.send('{"action":"jump"}')
        assert reply()["code"] == "unknown_action"
        ws.send('{"action":"start","sample_rate":1000}')
        assert reply()["code"] == "unsupported_sample_rate"
        ws.send('{"action":"start","format":"mp3"}')
        assert reply()["code"] == "unsupported_format"
        ws.send('{"action":"start"}')
        assert reply() == {"type": "status", "message": "ready"}
        ws.send(b"\x00\x01\x02")
        assert reply()["code"] == "bad_audio"
        ws.send('{"action":"ping"}')
        assert reply() == {"type": "pong"}
        ws.send('{"action":"stop"}')
        assert reply() == {"type": "status", "message": "stopped"}


def test_stop_mid_utterance_flushes_its_final_before_stopped(fake_pipeline):
    audio = load_audio(str(JFK))[: int(1.5 * 16000)]  # ends inside "And so my fellow Americans"
    result = run_stream(fake_pipeline.url, audio)
    finals = check_invariants(result)
    assert len(finals) == 1 and finals[0]["end"] == pytest.approx(1.5, abs=0.01)


def test_two_clients_only_see_their_own_transcripts(fake_pipeline):
    a, b = load_audio(str(JFK)), load_audio(str(STREAM_HEAD))

    async def both():
        return await asyncio.gather(stream(fake_pipeline.url, a, speed=10), stream(fake_pipeline.url, b, speed=10))

    ra, rb = asyncio.run(both())
    solo_a = run_stream(fake_pipeline.url, a)
    fa, fb, fsolo = check_invariants(ra), check_invariants(rb), check_invariants(solo_a)
    assert [(f["start"], f["end"], f["text"]) for f in fa] == [(f["start"], f["end"], f["text"]) for f in fsolo]
    assert len(fb) >= 6 and fb[-1]["end"] > 20  # the 28 s stream's utterances, not jfk's
    for f in fa + fb:
        assert fake_duration(f) == pytest.approx(f["end"] - f["start"], abs=0.01)


def test_too_many_clients_get_503_and_others_are_untouched(pipeline_factory):
    p = pipeline_factory(fake_config())
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(p.url)) for _ in range(p.config.server.max_sessions)]
        with pytest.raises(InvalidStatus) as info:
            connect(p.url)
        assert info.value.response.status_code == 503
        assert b"busy" in info.value.response.body
        held[0].send('{"action":"ping"}')
        assert json.loads(held[0].recv(timeout=timeout(10))) == {"type": "pong"}


def test_http_endpoints(fake_pipeline):
    with urllib.request.urlopen(fake_pipeline.http_base + "/healthz", timeout=timeout(10)) as r:
        assert r.status == 200
    with urllib.request.urlopen(fake_pipeline.http_base + "/readyz", timeout=timeout(10)) as r:
        assert r.status == 200 and b"2 worker" in r.read()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(fake_pipeline.http_base + "/nope", timeout=timeout(10))
    assert info.value.code == 404


def test_oversized_message_closes_only_that_client(fake_pipeline):
    big = np.zeros(fake_pipeline.config.server.max_message_bytes, dtype=np.uint8).tobytes() + b"xx"
    with connect(fake_pipeline.url) as other:
        with connect(fake_pipeline.url, max_size=None) as ws:
            ws.send('{"action":"start"}')
            ws.send(big)
            with pytest.raises(Exception):
                while True:
                    ws.recv(timeout=timeout(10))
            assert ws.close_code == 1009  # message too big
        other.send('{"action":"ping"}')
        assert json.loads(other.recv(timeout=timeout(10))) == {"type": "pong"}


def test_shutdown_flushes_finals_and_closes_with_1001(pipeline_factory):
    p = pipeline_factory(fake_config())
    audio = load_audio(str(JFK))
    with connect(p.url) as ws:
        _shutdown_mid_stream(p, ws, audio)


def _shutdown_mid_stream(p, ws, audio):
    ws.send('{"action":"start"}')
    ws.send(pcm16(audio[: 16000 * 4]))  # mid-speech, no stop
    msgs = []
    while not any(m.get("type") == "partial" for m in msgs):  # the server has the audio
        msgs.append(json.loads(ws.recv(timeout=timeout(10))))
    p._loop.call_soon_threadsafe(p._stop.set)
    try:
        while True:
            msgs.append(json.loads(ws.recv(timeout=timeout(20))))
    except Exception:
        pass
    assert ws.close_code == 1001
    finals = [m for m in msgs if m["type"] == "final"]
    assert finals and finals[-1]["end"] == pytest.approx(4.0, abs=0.05)
    assert {"type": "status", "message": "stopped"} in msgs
    assert p.stop() == 0
