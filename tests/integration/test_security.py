"""Worker authentication (CurveZMQ + ZAP), client API keys, origins and TLS."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import zmq
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from pipeline.client import load_audio
from pipeline.config import SecurityConfig
from pipeline.core import wire
from pipeline.keys import init_keys, load_worker
from tests.conftest import fake_config
from tests.data import JFK
from tests.helpers import pcm16, timeout

AUDIO = load_audio(str(JFK))
PIPELINE = [sys.executable, "-m", "pipeline"]


def stream_jfk(url: str, **kw) -> list[dict]:
    with connect(url, **kw) as ws:
        ws.send('{"action":"start","partials":false}')
        for i in range(0, len(AUDIO), 1600):
            ws.send(pcm16(AUDIO[i : i + 1600]))
        ws.send('{"action":"stop"}')
        out = []
        while (m := json.loads(ws.recv(timeout=timeout(30)))) != {"type": "status", "message": "stopped"}:
            out.append(m)
        return out


def test_keys_init_makes_private_secrets_and_an_allow_list(tmp_path):
    written = init_keys(tmp_path / "keys", ["host-a", "host-b"])
    secrets = [p for p in written if p.name.endswith(".key_secret")]
    assert sorted(p.name for p in secrets) == ["host-a.key_secret", "host-b.key_secret", "local.key_secret",
                                               "server.key_secret"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets)
    assert sorted(p.name for p in (tmp_path / "keys" / "authorized").iterdir()) == ["host-a.key", "host-b.key",
                                                                                   "local.key"]
    with pytest.raises(Exception, match="already holds keys"):
        init_keys(tmp_path / "keys", [])


def rogue(endpoint: str, keys=None) -> zmq.Socket:
    """A DEALER that says READY like a worker, with the given (public, secret, server) keys."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    if keys is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = keys
    sock.connect(endpoint)
    sock.send_multipart(wire.encode(wire.Command.READY, {"name": "rogue", "pid": 1, "model": "fake"}))
    return sock


def test_only_workers_with_allowed_keys_join_and_others_never_get_audio(pipeline_factory, tmp_path):
    init_keys(tmp_path / "keys", [])
    config = fake_config(count=1)
    config = replace(config, security=SecurityConfig(keys_dir=str(tmp_path / "keys")))
    p = pipeline_factory(config)
    endpoint = p.dispatcher.worker_endpoint
    server_public = load_worker(tmp_path / "keys", "local").server_public
    stranger_public, stranger_secret = zmq.curve_keypair()
    intruders = [rogue(endpoint, (stranger_public, stranger_secret, server_public)),  # a key not allowed
                 rogue(endpoint)]  # no key at all
    try:
        time.sleep(0.5)
        finals = [m for m in stream_jfk(p.url) if m["type"] == "final"]
        assert len(finals) >= 3  # the one allowed (local) worker did the work
        assert [w.info.get("name") for w in p.dispatcher.scheduler.workers.values()] == ["worker-0"]
        for sock in intruders:
            assert sock.poll(500) == 0  # not a job, not a heartbeat: nothing
    finally:
        for sock in intruders:
            sock.close(linger=0)


def test_a_missing_keys_folder_stops_startup_with_a_clear_message(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[workers]\nmodel = "fake"\n[security]\nkeys_dir = "{tmp_path / "nope"}"\n')
    out = subprocess.run([*PIPELINE, "run", "--config", str(config), "--port", "0"],
                         capture_output=True, text=True, timeout=timeout(60))
    assert out.returncode == 1 and "keys folder" in out.stderr and "does not exist" in out.stderr, out.stderr


def test_a_worker_host_with_an_unknown_key_is_refused_and_stops_cleanly(pipeline_factory, tmp_path):
    init_keys(tmp_path / "server-keys", [])
    init_keys(tmp_path / "other-keys", ["intruder"])  # a different server's keys
    config = fake_config(count=1)
    p = pipeline_factory(replace(config, security=SecurityConfig(keys_dir=str(tmp_path / "server-keys"))))
    other = tmp_path / "other-keys"
    (other / "server.key").write_bytes((tmp_path / "server-keys" / "server.key").read_bytes())  # knows the server
    wcfg = tmp_path / "w.toml"
    wcfg.write_text('[workers]\nmodel = "fake"\n')
    proc = subprocess.Popen([*PIPELINE, "worker", "--connect", p.dispatcher.worker_endpoint, "--processes", "1",
                             "--config", str(wcfg), "--keys", str(other), "--key-name", "intruder"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3)
        assert proc.poll() is None
        assert len(p.dispatcher.scheduler.workers) == 1  # only the local one
        finals = [m for m in stream_jfk(p.url) if m["type"] == "final"]
        assert len(finals) >= 3
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=timeout(15))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"pipeline worker did not stop on SIGTERM: {out}")
    assert proc.returncode == 0, out
    assert "stopped" in out


# -- clients ---------------------------------------------------------------------------


def secured(**security) -> object:
    config = fake_config(count=1)
    return replace(config, security=SecurityConfig(**security))


def test_api_keys_are_required_before_any_session(pipeline_factory, monkeypatch):
    monkeypatch.setenv("PIPELINE_API_KEYS", "from-env")
    p = pipeline_factory(secured(api_keys=("s3cret",)))
    for kwargs in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
        with pytest.raises(InvalidStatus) as info:
            connect(p.url, **kwargs)
        assert info.value.response.status_code == 401
    assert not p.ingest.connections
    assert [m for m in stream_jfk(p.url, additional_headers={"Authorization": "Bearer s3cret"}) if m["type"] == "final"]
    assert [m for m in stream_jfk(p.url + "?token=from-env") if m["type"] == "final"]


def test_browsers_from_other_origins_get_403(pipeline_factory):
    p = pipeline_factory(secured(allowed_origins=("https://app.example.com",)))
    with pytest.raises(InvalidStatus) as info:
        connect(p.url, origin="https://evil.example.net")
    assert info.value.response.status_code == 403
    assert [m for m in stream_jfk(p.url, origin="https://app.example.com") if m["type"] == "final"]
    assert [m for m in stream_jfk(p.url) if m["type"] == "final"]  # programs send no Origin


def make_cert(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_serves_wss(pipeline_factory, tmp_path):
    import ssl

    cert, key = make_cert(tmp_path)
    p = pipeline_factory(secured(tls_cert=str(cert), tls_key=str(key)))
    assert p.url.startswith("wss://")
    context = ssl.create_default_context(cafile=str(cert))
    assert [m for m in stream_jfk(p.url, ssl=context) if m["type"] == "final"]
    with pytest.raises(Exception):  # plain ws:// to a TLS port is not a stream
        connect(p.url.replace("wss://", "ws://"), open_timeout=timeout(5))
    assert os.path.exists(cert)


def test_pipeline_stream_speaks_wss_with_a_token(pipeline_factory, tmp_path):
    cert, key = make_cert(tmp_path)
    p = pipeline_factory(secured(tls_cert=str(cert), tls_key=str(key), api_keys=("k1",)))
    base = [*PIPELINE, "stream", str(JFK), "--url", p.url, "--speed", "8", "--cafile", str(cert)]
    ok = subprocess.run([*base, "--token", "k1"], capture_output=True, text=True, timeout=timeout(60))
    assert ok.returncode == 0 and ok.stdout.count("speech of") >= 3, ok.stderr  # the fake model's finals
    refused = subprocess.run(base, capture_output=True, text=True, timeout=timeout(60))
    assert refused.returncode != 0 and "401" in refused.stderr


def test_realtime_endpoint_checks_the_bearer_key_and_ignores_openai_beta(pipeline_factory):
    import asyncio
    import base64

    from openai import AsyncOpenAI

    p = pipeline_factory(secured(api_keys=("sk-right",)))
    base_url = p.http_base + "/v1"
    pcm = pcm16(AUDIO[: 3 * 16000])  # 16 kHz bytes, sent as if 24 kHz: fine for the fake model

    async def session(key: str) -> list:
        client = AsyncOpenAI(base_url=base_url, api_key=key)
        events = []
        async with client.realtime.connect(extra_query={"intent": "transcription"},
                                           extra_headers={"OpenAI-Beta": "realtime=v1"}) as conn:
            events.append(await conn.recv())
            await conn.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
            await conn.send({"type": "input_audio_buffer.commit"})
            while not any(e.type.endswith("transcription.completed") for e in events):
                events.append(await asyncio.wait_for(conn.recv(), timeout(20)))
        return events

    with pytest.raises(InvalidStatus) as info:
        asyncio.run(session("sk-wrong"))
    assert info.value.response.status_code == 401
    events = asyncio.run(session("sk-right"))
    assert events[0].type == "session.created"
    assert [e for e in events if e.type.endswith("completed")][0].transcript.startswith("speech of")
