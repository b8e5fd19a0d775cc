"""Hostile input on real sockets (issue 13): malformed fields, bad settings, limits, handshakes.

Each test is one scenario of docs/reliability.md, with the fake ASR.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from pipeline.client import load_audio
from pipeline.core.session import Session
from tests.conftest import fake_config
from tests.data import JFK
from tests.helpers import pcm16, timeout
from tests.integration.test_reliability import assert_one_final_each, until_stopped, wait_for

AUDIO = load_audio(str(JFK))  # 11 s, four utterances

BAD_STARTS = {
    '{"action":"start","format":[]}': "unsupported_format",
    '{"action":"start","format":{}}': "unsupported_format",
    '{"action":"start","language":[]}': "unsupported_language",
    '{"action":"start","sample_rate":' + "1" * 5000 + "}": "bad_json",
    '{"action":' + "[" * 50000 + "]" * 50000 + "}": "bad_json",
}


def test_malformed_fields_get_errors_and_the_pending_finals_still_arrive(fake_pipeline):
    """Defect 1: these raised inside the parser; the client got close 1011 and no finals."""
    with connect(fake_pipeline.url) as ws:
        ws.send('{"action":"start","partials":false}')
        for i in range(0, len(AUDIO), 1600):  # all of JFK: its finals are pending...
            ws.send(pcm16(AUDIO[i : i + 1600]))
        for bad in BAD_STARTS:  # ...when the bad starts come
            ws.send(bad)
        ws.send('{"action":"stop"}')
        messages = until_stopped(ws)
        ws.send('{"action":"ping"}')
        assert json.loads(ws.recv(timeout=timeout(10))) == {"type": "pong"}  # still open
    assert [m["code"] for m in messages if m["type"] == "error"] == list(BAD_STARTS.values())
    assert_one_final_each(messages)


def test_an_exception_inside_the_session_is_an_error_not_a_close(fake_pipeline, monkeypatch, caplog):
    """Defence in depth: whatever raises in the core, the ingest answers internal_error."""
    caplog.set_level(logging.INFO, logger="pipeline.ingest")
    receive_text = Session.receive_text

    def buggy(self: Session, text: str) -> None:
        if text == '{"action":"trip"}':
            raise RuntimeError("a bug in the core")
        receive_text(self, text)

    monkeypatch.setattr(Session, "receive_text", buggy)
    with connect(fake_pipeline.url) as ws:
        ws.send('{"action":"start","partials":false}')
        trips = 0
        for i in range(0, len(AUDIO), 1600):
            ws.send(pcm16(AUDIO[i : i + 1600]))
            if i % 16000 == 0:
                ws.send('{"action":"trip"}')
                trips += 1
        for _ in range(200):
            ws.send('{"action":"trip"}')
        ws.send('{"action":"stop"}')
        messages = until_stopped(ws)
    internal = [m for m in messages if m.get("code") == "internal_error"]
    assert len(internal) == trips + 200, [m for m in messages if m["type"] == "error"][:3]
    assert_one_final_each(messages)
    logged = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert 1 <= len(logged) <= 5 and sum(r.exc_info is not None for r in logged) == 1  # one traceback, not 211


def realtime_url(p) -> str:
    return p.url.replace("/v1/stream", "/v1/realtime")


def recv_event(ws) -> dict:
    return json.loads(ws.recv(timeout=timeout(20)))


BAD_UPDATES = {
    json.dumps({"type": "session.update", "session": {"audio": {"input": []}}}): "invalid_type",
    json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {"rate": "abc"}}}}}):
        "invalid_type",
    json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {"rate": []}}}}}):
        "invalid_type",
    '{"type":"session.update","session":{"audio":{"input":{"format":{"rate":NaN}}}}}': "invalid_value",
    '{"type":"session.update","session":{"audio":{"input":{"format":{"rate":1e999}}}}}': "invalid_value",
    '{"type":' + "7" * 5000 + "}": "invalid_json",
    # Defect 4: a language that is no Whisper code was accepted, then every append failed.
    json.dumps({"type": "transcription_session.update",
                "session": {"input_audio_transcription": {"language": "xx"}}}): "invalid_value",
}


def test_realtime_bad_updates_get_openai_errors_and_the_session_still_transcribes(fake_pipeline):
    """Defects 1 and 4 on /v1/realtime."""
    pcm = pcm16(AUDIO[: 5 * 16000]) + bytes(48000)  # 16 kHz bytes as 24 kHz (fine for the fake ASR), 1 s silence
    with connect(realtime_url(fake_pipeline)) as ws:
        assert recv_event(ws)["type"] == "session.created"
        for text, code in BAD_UPDATES.items():
            ws.send(text)
            event = recv_event(ws)
            assert event["type"] == "error" and event["error"]["code"] == code, (text[:80], event)
            assert event["error"]["type"] == "invalid_request_error"
        for i in range(0, len(pcm), 9600):
            ws.send(json.dumps({"type": "input_audio_buffer.append",
                                "audio": base64.b64encode(pcm[i : i + 9600]).decode()}))
        events = []
        while not any(e["type"].endswith("transcription.completed") for e in events):
            events.append(recv_event(ws))
    assert not [e for e in events if e["type"] == "error"], events
    done = [e for e in events if e["type"].endswith("transcription.completed")]
    assert done[0]["transcript"].startswith("speech of")


def test_realtime_never_closes_with_1011_on_nested_and_huge_values(fake_pipeline):
    """A sample of the unit fuzzers' inputs, over a real socket: each gets an event, none a close."""
    from tests.fuzz import Huge, dumps

    nasty = [[], {}, [[[]]], {"a": {"b": []}}, Huge(5000), float("nan"), float("inf"), 10**40, "x" * 10001, None]
    with connect(realtime_url(fake_pipeline)) as ws:
        recv_event(ws)
        for value in nasty:
            for event in ({"type": "session.update", "session": value},
                          {"type": "session.update", "session": {"audio": {"input": {"format": value}}}},
                          {"type": "session.update", "session": {"audio": {"input": {"transcription": value}}}},
                          {"type": "session.update", "session": {"input_audio_transcription": {"language": value}}},
                          {"type": "input_audio_buffer.append", "audio": value},
                          {"type": value}, {"type": "input_audio_buffer.commit", "event_id": value}):
                ws.send(dumps(event))
                assert recv_event(ws)["type"] in ("error", "session.updated")
        ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        assert recv_event(ws)["type"] == "input_audio_buffer.cleared"


def test_stream_never_closes_with_1011_on_nested_and_huge_values(fake_pipeline):
    from tests.fuzz import Huge, dumps

    nasty = [[], {}, [[[]]], {"a": {"b": []}}, Huge(5000), float("nan"), float("-inf"), 10**40, "x" * 10000, None]
    with connect(fake_pipeline.url) as ws:
        for value in nasty:
            for key in ("action", "sample_rate", "format", "language", "words", "partials"):
                ws.send(dumps({"action": "start", key: value}))
                reply = json.loads(ws.recv(timeout=timeout(10)))
                if reply == {"type": "status", "message": "ready"}:  # a value that is fine: stop again
                    ws.send('{"action":"stop"}')
                    assert json.loads(ws.recv(timeout=timeout(10)))["message"] == "stopped"
                else:
                    assert reply["type"] == "error", reply
        ws.send('{"action":"ping"}')
        assert json.loads(ws.recv(timeout=timeout(10))) == {"type": "pong"}



@pytest.mark.parametrize("rate", [16000, 8000])
def test_one_message_of_the_largest_legal_size_is_accepted_on_a_fresh_connection(fake_pipeline, rate):
    """Defect 5: 1 MiB of PCM16 (32.8 s at 16 kHz, 65.5 s at 8 kHz) got rate_limited and close 1008."""
    size = fake_pipeline.config.server.max_message_bytes
    pcm = (pcm16(AUDIO) * (size // len(pcm16(AUDIO)) + 1))[:size]
    with connect(fake_pipeline.url, max_size=None) as ws:
        ws.send(json.dumps({"action": "start", "partials": False, "sample_rate": rate}))
        ws.send(pcm)  # the backlog of a client that reconnects, in one message
        ws.send('{"action":"stop"}')
        messages = until_stopped(ws, limit_s=120)
    assert not [m for m in messages if m["type"] == "error"], [m for m in messages if m["type"] == "error"]
    assert [m for m in messages if m["type"] == "final"]


def configured(server: dict | None = None, security: dict | None = None, **workers):
    config = fake_config(count=1, **workers)
    return replace(config, server=replace(config.server, **(server or {})),
                   security=replace(config.security, **(security or {})))


def from_address(p, host: str, path: str = "/v1/stream", **kw):
    """A WebSocket connection from another loopback address (127.0.0.2, ...)."""
    server_host, port = p.url.split("//")[1].split("/")[0].split(":")
    sock = socket.create_connection((server_host, int(port)), timeout=timeout(10), source_address=(host, 0))
    return connect(p.url.replace("/v1/stream", path), sock=sock, **kw)


def test_pings_alone_do_not_hold_a_session(pipeline_factory):
    """Defect 6: any message reset the idle timer, so pings held a slot forever; idle means no audio."""
    p = pipeline_factory(configured({"idle_timeout_s": 1.0}))
    messages = []
    deadline = time.monotonic() + timeout(30)
    with connect(p.url) as ws:
        ws.send('{"action":"start"}')
        with pytest.raises(ConnectionClosed):
            while time.monotonic() < deadline:  # a ping and its pong, over and over
                ws.send('{"action":"ping"}')
                messages.append(json.loads(ws.recv(timeout=timeout(10))))
        with pytest.raises(ConnectionClosed) as info:  # what came before the close, if a send saw it first
            while True:
                messages.append(json.loads(ws.recv(timeout=timeout(10))))
    assert info.value.rcvd is not None and (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "idle timeout")
    assert [m["code"] for m in messages if m["type"] == "error"] == ["idle_timeout"]
    assert messages.count({"type": "pong"}) >= 1


def test_one_address_cannot_take_every_session(pipeline_factory):
    """Defect 6: a per-address cap, refused with 503 and its own reason."""
    p = pipeline_factory(configured({"max_sessions": 4, "max_sessions_per_address": 2}))
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(p.url)) for _ in range(2)]
        with pytest.raises(InvalidStatus) as info:
            connect(p.url)
        assert info.value.response.status_code == 503
        assert b"too many sessions from your address" in info.value.response.body
        other = stack.enter_context(from_address(p, "127.0.0.2"))  # another client still gets in
        other.send('{"action":"ping"}')
        assert json.loads(other.recv(timeout=timeout(10))) == {"type": "pong"}
        held[0].send('{"action":"ping"}')
        assert json.loads(held[0].recv(timeout=timeout(10))) == {"type": "pong"}
    assert 'stt_refused_handshakes_total{reason="per_address"} 1.0' in metrics_text(p)


def metrics_text(p) -> str:
    with urllib.request.urlopen(p.http_base + "/metrics", timeout=timeout(10)) as r:
        return r.read().decode()


def logged(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_wrong_keys_are_locked_out_and_every_refusal_is_logged_with_the_address(pipeline_factory, caplog):
    """Defect 7: wrong keys were answered as fast as they came, and 401s logged with no address."""
    caplog.set_level(logging.INFO, logger="pipeline.ingest")
    p = pipeline_factory(configured(security={"api_keys": ("right",), "max_auth_failures": 3}))
    statuses = []
    for _ in range(5):
        with pytest.raises(InvalidStatus) as info:
            connect(p.url, additional_headers={"Authorization": "Bearer wrong"})
        statuses.append(info.value.response.status_code)
        retry_after = info.value.response.headers.get("Retry-After")
    assert statuses == [401, 401, 401, 429, 429]
    assert retry_after is not None and 0 < int(retry_after) <= 60
    with pytest.raises(InvalidStatus) as info:  # locked out: even the right key waits for the window
        connect(p.url, additional_headers={"Authorization": "Bearer right"})
    assert info.value.response.status_code == 429
    with from_address(p, "127.0.0.2", additional_headers={"Authorization": "Bearer right"}) as ws:
        ws.send('{"action":"ping"}')
        assert json.loads(ws.recv(timeout=timeout(10))) == {"type": "pong"}
    refused = logged(caplog, "refused GET /v1/stream from 127.0.0.1")
    assert any(": 401 " in line for line in refused) and any(": 429 " in line for line in refused)
    text = metrics_text(p)
    assert 'stt_refused_handshakes_total{reason="unauthorized"} 3.0' in text
    assert 'stt_refused_handshakes_total{reason="auth_lockout"} 3.0' in text


def raw_http(p, data: bytes) -> bytes:
    host, port = p.http_base.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout(10)) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_other_methods_bad_requests_and_long_paths_are_answered_or_logged_briefly(pipeline_factory, caplog):
    """Defect 7: non-GET and failed handshakes got no response and no log line; a 404 echoed 8 KB."""
    caplog.set_level(logging.INFO, logger="pipeline.ingest")
    p = pipeline_factory(configured())
    reply = raw_http(p, b"POST /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: GET\r\n" in reply
    wait_for(lambda: logged(caplog, "refused POST /v1/stream from 127.0.0.1: 405"), 10, "the 405's log line")
    # A request websockets cannot parse gets no response, but a log line with the address.
    assert raw_http(p, b"POST /v1/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello") == b""
    assert raw_http(p, b"\x16\x03\x01 not http at all\r\n\r\n") == b""
    wait_for(lambda: len(logged(caplog, "failed handshake from 127.0.0.1")) == 2, 10, "the log lines")
    assert "unsupported request body" in logged(caplog, "failed handshake from 127.0.0.1")[0]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(p.http_base + "/" + "A" * 8000, timeout=timeout(10))
    body = info.value.read()
    assert info.value.code == 404 and len(body) < 200 and b"A" * 65 not in body
    # A flood of refusals is a few lines and a count, not a line each.
    caplog.clear()
    for _ in range(30):
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(p.http_base + "/nope", timeout=timeout(10))
    assert 1 <= len(logged(caplog, "refused GET /nope")) <= 5
